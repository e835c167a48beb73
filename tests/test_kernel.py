"""The C kernel against its NumPy twin, finite differences, PyTorch, and bad inputs."""

import numpy as np
import pytest

from rnnkit import kernel, layout, reference
from rnnkit.errors import KernelError

SHAPES = [(1, 1, 1, 2), (7, 3, 5, 11), (13, 4, 17, 29), (2, 5, 3, 130), (4, 2, 8, 3)]
ACTIVATIONS = ["tanh", "logistic", "identity"]


def make_batch(rng, T, B, H, V, reset_p=0.3, ignore_p=0.2, scale=0.5, dtype=np.float32):
    params = (rng.standard_normal(layout.layout_size(V, H)) * scale).astype(dtype)
    inputs = rng.integers(0, V, (T, B)).astype(np.int32)
    targets = rng.integers(0, V, (T, B)).astype(np.int32)
    targets[rng.random((T, B)) < ignore_p] = -1
    resets = (rng.random((T, B)) < reset_p).astype(np.int32)
    resets[0] = 1
    h0 = (rng.standard_normal((B, H)) * 0.5).astype(dtype)
    return params, inputs, targets, resets, h0


def assert_close(name, actual, expected, rtol, atol):
    diff = float(np.max(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)))) if np.size(actual) else 0.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                               err_msg=f"{name}: max abs diff {diff:.3g}")


def run_both(params, inputs, targets, resets, h0, V, activation="tanh", loss_scale=1.0):
    results = []
    for impl in (kernel, reference):
        loss, logp, hs, cache = impl.forward(params, inputs, targets, resets, h0, V=V, activation=activation)
        grads = np.zeros_like(params)
        dh0 = impl.backward(grads, cache, loss_scale=loss_scale)
        results.append((loss, logp, hs, grads, dh0))
    return results


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_num_params_matches_layout():
    """The C kernel's parameter count equals the Python layout's, and the views tile it."""
    for V, H in [(2, 1), (11, 5), (10000, 256)]:
        assert kernel.num_params(V, H) == layout.layout_size(V, H) == reference.num_params(V, H)
        flat = np.arange(kernel.num_params(V, H), dtype=np.float32)
        views = kernel.param_views(flat, V, H)
        assert [name for name, _ in layout.param_shapes(V, H)] == list(views)
        assert sum(v.size for v in views.values()) == flat.size
        assert np.shares_memory(views["b_y"], flat)


def test_abi_version_and_import():
    """The compiled module imports and reports the ABI version kernel.py expects."""
    from rnnkit._rnn_cffi import ffi, lib
    assert lib.rnn_abi_version() == kernel.ABI_VERSION
    assert ffi.string(lib.rnn_strerror(lib.RNN_E_TOKEN)).decode().startswith("input token")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_backward_parity(rng, shape, activation):
    """C forward (loss, log-probs, hidden states) and every gradient equal reference.py in float32."""
    T, B, H, V = shape
    batch = make_batch(rng, T, B, H, V)
    (lc, pc, hc, gc, dc), (lr, pr, hr, gr, dr) = run_both(*batch, V, activation, loss_scale=0.7)
    assert_close("loss", lc, lr, 1e-5, 1e-6)
    assert_close("logprobs", pc, pr, 1e-5, 1e-6)
    assert_close("hs", hc, hr, 1e-5, 1e-6)
    for name in layout.PARAM_NAMES:
        assert_close(f"d{name}", layout.param_views(gc, V, H)[name],
                     layout.param_views(gr, V, H)[name], 1e-4, 1e-5)
    assert_close("dh0", dc, dr, 1e-4, 1e-5)


@pytest.mark.parametrize("case", ["all_reset", "all_ignored", "no_reset"])
def test_degenerate_batches(rng, case):
    """All-reset and all-ignored batches match the reference; all-ignored has zero loss and output grads."""
    T, B, H, V = 6, 3, 5, 9
    params, inputs, targets, resets, h0 = make_batch(rng, T, B, H, V)
    if case == "all_reset":
        resets[:] = 1
    elif case == "all_ignored":
        targets[:] = -1
    else:
        resets[:] = 0
    (lc, pc, hc, gc, dc), (lr, pr, hr, gr, dr) = run_both(params, inputs, targets, resets, h0, V)
    assert_close("loss", lc, lr, 1e-5, 1e-6)
    assert_close("hs", hc, hr, 1e-5, 1e-6)
    assert_close("grads", gc, gr, 1e-4, 1e-5)
    assert_close("dh0", dc, dr, 1e-4, 1e-5)
    if case == "all_ignored":
        assert lc == 0.0 and not pc.any() and not gc.any() and not dc.any()
    if case == "all_reset":
        assert not dc.any(), "no gradient reaches h0 when every step resets"
        assert not layout.param_views(gc, V, H)["W_hh"].any()


def test_reset_isolates_sequences(rng):
    """A sequence starting with a reset scores the same whatever came before it in its row."""
    T, B, H, V = 8, 2, 6, 10
    params, inputs, targets, resets, h0 = make_batch(rng, T, B, H, V, reset_p=0.0)
    resets[:] = 0
    resets[0] = 1
    resets[4, 0] = 1
    _, logp, _, _ = kernel.forward(params, inputs, targets, resets, h0, V=V, keep_for_backward=False)
    alone = np.ascontiguousarray(inputs[4:, :1]), np.ascontiguousarray(targets[4:, :1])
    r = np.zeros((4, 1), np.int32)
    r[0] = 1
    _, logp_alone, _, _ = kernel.forward(params, alone[0], alone[1], r, h0[:1], V=V, keep_for_backward=False)
    np.testing.assert_allclose(logp[4:, 0], logp_alone[:, 0], rtol=1e-6, atol=1e-7)


def test_scoring_mode_equals_training_mode(rng):
    """forward without kept dlogits (chunked output layer) gives the same loss and log-probs."""
    T, B, H, V = 300, 3, 4, 5000   # 900 positions: two chunks of 838 rows (4M logits each)
    batch = make_batch(rng, T, B, H, V)
    a = kernel.forward(*batch, V=V, keep_for_backward=True)
    b = kernel.forward(*batch, V=V, keep_for_backward=False)
    assert_close("loss", a[0], b[0], 1e-6, 1e-6)
    assert_close("logprobs", a[1], b[1], 1e-6, 1e-7)
    assert b[3].dlogits is None
    with pytest.raises(KernelError, match="keep_for_backward"):
        kernel.backward(np.zeros_like(batch[0]), b[3])


@pytest.mark.parametrize("T,B,H,V", [(1, 1, 1, 2), (7, 3, 13, 11), (5, 1, 16, 130), (4, 8, 24, 9), (11, 3, 8, 7)])
def test_few_rows_scoring_matches_reference(rng, T, B, H, V):
    """Scoring <= 32 rows skips sgemm for the kernel's own dot products; covers odd row
    counts, H with and without a vector tail, V not a multiple of 4, and 33 rows (sgemm)."""
    batch = make_batch(rng, T, B, H, V)
    loss_c, logp_c, _, _ = kernel.forward(*batch, V=V, keep_for_backward=False)
    loss_r, logp_r, _, _ = reference.forward(*batch, V=V, keep_for_backward=False)
    assert_close("loss", loss_c, loss_r, 1e-5, 1e-6)
    assert_close("logprobs", logp_c, logp_r, 1e-5, 1e-6)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_reference_gradient_matches_finite_differences(activation):
    """reference.py's analytic gradients agree with central differences in float64 (rel < 1e-6)."""
    rng = np.random.default_rng(7)
    T, B, H, V = 5, 3, 4, 6
    params, inputs, targets, resets, h0 = make_batch(rng, T, B, H, V, dtype=np.float64)
    resets[2, 1] = 1

    def loss_of(p, h):
        return reference.forward(p, inputs, targets, resets, h, V=V, activation=activation,
                                 keep_for_backward=False)[0]

    _, _, _, cache = reference.forward(params, inputs, targets, resets, h0, V=V, activation=activation)
    grads = np.zeros_like(params)
    dh0 = reference.backward(grads, cache)
    delta = 1e-5
    offset = 0
    checked = 0
    for name, shape in layout.param_shapes(V, H):
        size = int(np.prod(shape))
        for i in rng.choice(size, size=min(10, size), replace=False):
            j = offset + i
            plus, minus = params.copy(), params.copy()
            plus[j] += delta
            minus[j] -= delta
            numeric = (loss_of(plus, h0) - loss_of(minus, h0)) / (2 * delta)
            rel = abs(grads[j] - numeric) / max(abs(grads[j]) + abs(numeric), 1e-12)
            assert rel < 1e-6 or abs(grads[j] - numeric) < 1e-10, f"d{name}[{i}]: {grads[j]} vs {numeric}"
            checked += 1
        offset += size
    for i in range(B * H):
        plus, minus = h0.copy(), h0.copy()
        plus.flat[i] += delta
        minus.flat[i] -= delta
        numeric = (loss_of(params, plus) - loss_of(params, minus)) / (2 * delta)
        rel = abs(dh0.flat[i] - numeric) / max(abs(dh0.flat[i]) + abs(numeric), 1e-12)
        assert rel < 1e-6 or abs(dh0.flat[i] - numeric) < 1e-10, f"dh0[{i}]"
    assert checked >= 30


def test_backward_accumulates(rng):
    """Two backward calls without zeroing give exactly twice the gradient."""
    T, B, H, V = 6, 3, 5, 13
    batch = make_batch(rng, T, B, H, V)
    _, _, _, cache = kernel.forward(*batch, V=V)
    once = np.zeros_like(batch[0])
    kernel.backward(once, cache)
    twice = np.zeros_like(batch[0])
    dh0 = np.zeros((B, H), np.float32)
    kernel.backward(twice, cache, dh0=dh0)
    kernel.backward(twice, cache, dh0=dh0)
    np.testing.assert_allclose(twice, 2 * once, rtol=1e-6, atol=1e-7)


def test_identical_calls_identical_results(rng):
    """The kernel is deterministic: the same call twice gives bit-identical outputs."""
    T, B, H, V = 9, 4, 16, 40
    batch = make_batch(rng, T, B, H, V)
    outs = []
    for _ in range(2):
        loss, logp, hs, cache = kernel.forward(*batch, V=V)
        grads = np.zeros_like(batch[0])
        dh0 = kernel.backward(grads, cache)
        outs.append((loss, logp.copy(), hs.copy(), grads, dh0))
    assert outs[0][0] == outs[1][0]
    for a, b in zip(outs[0][1:], outs[1][1:]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_step_matches_forward_and_sums_to_one(rng, activation):
    """One-step inference equals the reference, its distribution sums to 1, and stepping
    through a sequence reproduces forward's target log-probabilities."""
    T, B, H, V = 6, 3, 8, 21
    params, inputs, targets, resets, h0 = make_batch(rng, T, B, H, V, reset_p=0.0, ignore_p=0.0)
    resets[:] = 0
    h_c, lp_c = kernel.step(params, h0, inputs[0].copy(), V=V, activation=activation)
    h_r, lp_r = reference.step(params, h0, inputs[0].copy(), V=V, activation=activation)
    assert_close("h", h_c, h_r, 1e-5, 1e-6)
    assert_close("logprobs", lp_c, lp_r, 1e-5, 1e-6)
    np.testing.assert_allclose(np.exp(lp_c.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)
    _, logp, _, _ = kernel.forward(params, inputs, targets, resets, h0, V=V, activation=activation)
    h = h0
    for t in range(T):
        h, lp = kernel.step(params, h, np.ascontiguousarray(inputs[t]), V=V, activation=activation)
        np.testing.assert_allclose(lp[np.arange(B), targets[t]], logp[t], rtol=1e-5, atol=1e-6)


def test_optimizers_match_reference(rng):
    """SGD, Adam (several steps) and global-norm clipping match reference.py."""
    n = 1000
    p0 = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    pc, pr = p0.copy(), p0.copy()
    kernel.sgd_update(pc, g, 0.1)
    reference.sgd_update(pr, g, 0.1)
    np.testing.assert_allclose(pc, pr, rtol=1e-6)
    pc, pr = p0.copy(), p0.copy()
    mc, vc, mr, vr = (np.zeros(n, np.float32) for _ in range(4))
    for t in range(1, 6):
        kernel.adam_update(pc, g, mc, vc, t, 1e-2)
        reference.adam_update(pr, g, mr, vr, t, 1e-2)
    np.testing.assert_allclose(pc, pr, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mc, mr, rtol=1e-5, atol=1e-7)
    gc, gr = g.copy(), g.copy()
    nc, nr = kernel.clip_grad_norm(gc, 1.0), reference.clip_grad_norm(gr, 1.0)
    assert abs(nc - nr) / nr < 1e-6
    assert abs(np.linalg.norm(gc) - 1.0) < 1e-4
    np.testing.assert_allclose(gc, gr, rtol=1e-5, atol=1e-7)
    small = g * 1e-3
    before = small.copy()
    kernel.clip_grad_norm(small, 1.0)
    assert np.array_equal(small, before), "a norm under the limit leaves the gradient untouched"


def test_tanh_is_accurate_everywhere():
    """The kernel's vectorised tanh is within 2 ulp of tanh over the whole float range
    (both branches, the tails of rows, tiny values, +-inf and NaN). The pre-activation
    is 0 + x + 0, so -0.0 arrives as +0.0."""
    values = np.concatenate([
        np.linspace(-12, 12, 200_003), np.geomspace(1e-30, 1e-2, 5_000), -np.geomspace(1e-30, 1e-2, 5_000),
        [0.0, -0.0, 0.625, -0.625, np.nextafter(0.625, 0), 88.0, -100.0, 1e30, np.inf, -np.inf, np.nan],
    ]).astype(np.float32)
    H = 13                                                 # rows of 8 + a tail of 5
    V = -(-len(values) // H)
    x = np.zeros(V * H, np.float32)
    x[: len(values)] = values
    params = np.zeros(kernel.num_params(V, H), np.float32)
    kernel.param_views(params, V, H)["W_xh"][:] = x.reshape(V, H)   # h = tanh(W_xh[token])
    h, _ = kernel.step(params, np.zeros((V, H), np.float32), np.arange(V, dtype=np.int32), V=V)
    got = h.reshape(-1)[: len(values)]
    want = np.tanh(values.astype(np.float64)).astype(np.float32)
    finite = np.isfinite(want)
    g, w = got[finite], want[finite]
    ulps = np.where(g == w, 0, np.abs(g.view(np.int32).astype(np.int64) - w.view(np.int32).astype(np.int64)))
    assert ulps.max() <= 2, f"max {ulps.max()} ulp at x = {values[finite][ulps.argmax()]}"
    assert np.isnan(got[np.isnan(values)]).all()


def test_results_do_not_depend_on_thread_count(rng):
    """1 and 2 threads give bit-identical forward, scoring and gradients: products are
    split by rows or columns of the output, each part one single-threaded sgemm."""
    old = kernel.get_num_threads()
    outputs = []
    try:
        for threads in (1, 2):
            kernel.set_num_threads(threads)
            runs = []
            for T, B, H, V in [(35, 32, 64, 3000), (20, 1, 256, 10000), (9, 4, 33, 517)]:
                batch = make_batch(np.random.default_rng(T), T, B, H, V)
                loss, logp, hs, cache = kernel.forward(*batch, V=V)
                grads = np.zeros_like(batch[0])
                kernel.backward(grads, cache)
                scored = kernel.forward(*batch, V=V, keep_for_backward=False)[1]
                runs.append((loss, logp, hs, grads, scored))
            outputs.append(runs)
    finally:
        kernel.set_num_threads(old)
    for one, two in zip(*outputs):
        for a, b in zip(one, two):
            assert np.array_equal(a, b)


def test_threads_settable():
    """The kernel's thread count can be set and read back."""
    old = kernel.get_num_threads()
    kernel.set_num_threads(1)
    assert kernel.get_num_threads() == 1
    kernel.set_num_threads(old)
    with pytest.raises(KernelError):
        kernel.set_num_threads(0)


# ----------------------------------------------------------------------------------
# bad inputs: each is a clear exception, never a crash
# ----------------------------------------------------------------------------------

def test_bad_token_ids(rng):
    """Out-of-range input ids, target ids below -1 or >= V, and bad reset flags are rejected."""
    T, B, H, V = 4, 2, 3, 5
    params, inputs, targets, resets, h0 = make_batch(rng, T, B, H, V)
    for impl in (kernel, reference):
        bad = inputs.copy(); bad[1, 1] = V
        with pytest.raises(KernelError, match="input token"):
            impl.forward(params, bad, targets, resets, h0, V=V)
        bad = inputs.copy(); bad[0, 0] = -1
        with pytest.raises(KernelError, match="input token"):
            impl.forward(params, bad, targets, resets, h0, V=V)
        for value in (V, -2):
            bad = targets.copy(); bad[2, 0] = value
            with pytest.raises(KernelError, match="target"):
                impl.forward(params, inputs, bad, resets, h0, V=V)
        bad = resets.copy(); bad[0, 0] = 2
        with pytest.raises(KernelError, match="reset"):
            impl.forward(params, inputs, targets, bad, h0, V=V)
        with pytest.raises(KernelError, match="token"):
            impl.step(params, h0, np.array([0, V], np.int32), V=V)


def test_bad_arrays(rng):
    """Wrong dtype, Fortran order, wrong shapes, read-only outputs and aliasing raise KernelError."""
    T, B, H, V = 4, 3, 5, 7
    params, inputs, targets, resets, h0 = make_batch(rng, T, B, H, V)
    with pytest.raises(KernelError, match="dtype"):
        kernel.forward(params.astype(np.float64), inputs, targets, resets, h0, V=V)
    with pytest.raises(KernelError, match="dtype"):
        kernel.forward(params, inputs.astype(np.int64), targets, resets, h0, V=V)
    with pytest.raises(KernelError, match="C-contiguous"):
        kernel.forward(params, np.asfortranarray(inputs), targets, resets, h0, V=V)
    with pytest.raises(KernelError, match="shape"):
        kernel.forward(params, inputs, targets[:2], resets, h0, V=V)
    with pytest.raises(KernelError, match="shape"):
        kernel.forward(params[:-1], inputs, targets, resets, h0, V=V)
    with pytest.raises(KernelError, match="shape"):
        kernel.forward(params, inputs[0], targets, resets, h0, V=V)
    with pytest.raises(KernelError, match="activation"):
        kernel.forward(params, inputs, targets, resets, h0, V=V, activation="relu")
    _, _, _, cache = kernel.forward(params, inputs, targets, resets, h0, V=V)
    grads = np.zeros_like(params)
    grads.setflags(write=False)
    with pytest.raises(KernelError, match="read-only"):
        kernel.backward(grads, cache)
    with pytest.raises(KernelError, match="share memory"):
        kernel.backward(params, cache)
    with pytest.raises(KernelError, match="shape"):
        kernel.backward(np.zeros(5, np.float32), cache)
    frozen = params.copy()
    frozen.setflags(write=False)
    with pytest.raises(KernelError, match="read-only"):
        kernel.sgd_update(frozen, params, 0.1)
    with pytest.raises(KernelError, match="out of range"):
        kernel.sgd_update(params.copy(), params, -1.0)
    with pytest.raises(KernelError, match="out of range"):
        kernel.adam_update(params.copy(), params, np.zeros_like(params), np.zeros_like(params), 0, 1e-3)
    with pytest.raises(KernelError, match="non-finite"):
        kernel.clip_grad_norm(np.array([np.nan, 1.0], np.float32), 1.0)
    with pytest.raises(KernelError, match=r"V = 0 is out of range \[1, 1073741824\]"):
        kernel.num_params(0, 4)


# ----------------------------------------------------------------------------------
# PyTorch: same weights, same numbers (skipped where torch is not installed)
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_parity(dtype):
    """nn.RNN(tanh) + Linear with the kernel's weights gives the same loss, log-probs and grads."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    T, B, H, V = 7, 3, 9, 17
    params, inputs, targets, _, h0 = make_batch(rng, T, B, H, V, ignore_p=0.0)
    resets = np.zeros((T, B), np.int32)          # nn.RNN has no resets: one stream per row
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    p = layout.param_views(params.astype(np.float64), V, H)
    rnn = torch.nn.RNN(V, H, nonlinearity="tanh").to(tdtype)
    head = torch.nn.Linear(H, V).to(tdtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.tensor(p["W_xh"].T))
        rnn.weight_hh_l0.copy_(torch.tensor(p["W_hh"]))
        rnn.bias_ih_l0.copy_(torch.tensor(p["b_h"]))
        rnn.bias_hh_l0.zero_()
        head.weight.copy_(torch.tensor(p["W_hy"]))
        head.bias.copy_(torch.tensor(p["b_y"]))
    x = torch.nn.functional.one_hot(torch.tensor(inputs, dtype=torch.long), V).to(tdtype)
    h0_t = torch.tensor(h0.astype(np.float64), dtype=tdtype, requires_grad=True)
    out, _ = rnn(x, h0_t[None])
    logp_all = torch.log_softmax(head(out), dim=-1)
    tgt = torch.tensor(targets, dtype=torch.long)
    logp_t = logp_all.gather(-1, tgt[..., None])[..., 0]
    loss_t = -logp_t.sum()
    loss_t.backward()

    loss, logp, hs, cache = kernel.forward(params, inputs, targets, resets, h0, V=V)
    grads = np.zeros_like(params)
    dh0 = kernel.backward(grads, cache)
    g = layout.param_views(grads, V, H)
    rtol, atol = (1e-5, 1e-5) if dtype == np.float32 else (1e-5, 1e-6)
    assert_close("loss", loss, loss_t.item(), rtol, atol)
    assert_close("logprobs", logp, logp_t.detach().numpy(), rtol, atol)
    assert_close("hs", hs, out.detach().numpy(), rtol, atol)
    assert_close("dW_xh", g["W_xh"], rnn.weight_ih_l0.grad.numpy().T, 1e-4, 1e-5)
    assert_close("dW_hh", g["W_hh"], rnn.weight_hh_l0.grad.numpy(), 1e-4, 1e-5)
    assert_close("db_h", g["b_h"], rnn.bias_ih_l0.grad.numpy(), 1e-4, 1e-5)
    assert_close("dW_hy", g["W_hy"], head.weight.grad.numpy(), 1e-4, 1e-5)
    assert_close("db_y", g["b_y"], head.bias.grad.numpy(), 1e-4, 1e-5)
    assert_close("dh0", dh0, h0_t.grad.numpy(), 1e-4, 1e-5)


# ----------------------------------------------------------------------------------
# dropout masks (input rows and before the output layer)
# ----------------------------------------------------------------------------------

def make_masks(rng, T, B, H, p=0.3, dtype=np.float32):
    keep = 1.0 / (1.0 - p)
    return tuple(((rng.random((T, B, H)) >= p) * keep).astype(dtype) for _ in range(2))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("which", ["in", "out", "both"])
def test_dropout_parity(rng, shape, which):
    """With dropout masks, C forward and every gradient still equal reference.py."""
    T, B, H, V = shape
    batch = make_batch(rng, T, B, H, V)
    in_mask, out_mask = make_masks(rng, T, B, H)
    masks = {"in_mask": in_mask if which != "out" else None, "out_mask": out_mask if which != "in" else None}
    results = []
    for impl in (kernel, reference):
        loss, logp, hs, cache = impl.forward(*batch, V=V, **masks)
        grads = np.zeros_like(batch[0])
        dh0 = impl.backward(grads, cache, loss_scale=0.5)
        results.append((loss, logp, hs, grads, dh0))
    (lc, pc, hc, gc, dc), (lr, pr, hr, gr, dr) = results
    assert_close("loss", lc, lr, 1e-5, 1e-6)
    assert_close("logprobs", pc, pr, 1e-5, 1e-6)
    assert_close("hs", hc, hr, 1e-5, 1e-6)
    assert_close("grads", gc, gr, 1e-4, 1e-5)
    assert_close("dh0", dc, dr, 1e-4, 1e-5)


def test_dropout_gradient_matches_finite_differences():
    """reference.py's gradients with both masks agree with central differences in float64."""
    rng = np.random.default_rng(11)
    T, B, H, V = 4, 2, 5, 7
    params, inputs, targets, resets, h0 = make_batch(rng, T, B, H, V, dtype=np.float64)
    in_mask, out_mask = make_masks(rng, T, B, H, dtype=np.float64)

    def loss_of(p):
        return reference.forward(p, inputs, targets, resets, h0, V=V, keep_for_backward=False,
                                 in_mask=in_mask, out_mask=out_mask)[0]

    _, _, _, cache = reference.forward(params, inputs, targets, resets, h0, V=V, in_mask=in_mask, out_mask=out_mask)
    grads = np.zeros_like(params)
    reference.backward(grads, cache)
    for j in rng.choice(params.size, size=40, replace=False):
        plus, minus = params.copy(), params.copy()
        plus[j] += 1e-5
        minus[j] -= 1e-5
        numeric = (loss_of(plus) - loss_of(minus)) / 2e-5
        rel = abs(grads[j] - numeric) / max(abs(grads[j]) + abs(numeric), 1e-12)
        assert rel < 1e-6 or abs(grads[j] - numeric) < 1e-10, f"param {j}: {grads[j]} vs {numeric}"


def test_dropout_mask_shape_checked(rng):
    """A mask of the wrong shape or dtype is a clear error."""
    T, B, H, V = 3, 2, 4, 5
    batch = make_batch(rng, T, B, H, V)
    with pytest.raises(KernelError, match="in_mask"):
        kernel.forward(*batch, V=V, in_mask=np.ones((T, B, H + 1), np.float32))
    with pytest.raises(KernelError, match="out_mask"):
        kernel.forward(*batch, V=V, out_mask=np.ones((T, B, H), np.float64))
