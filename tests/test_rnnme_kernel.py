"""The class-factored output and direct connections (RNNME) of the C kernel: against
reference.py, finite differences, their own contracts (distributions sum to 1, scores do
not depend on the batch) and hostile arguments."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, strategies as st

from rnnkit import kernel, layout, reference
from rnnkit.errors import KernelError
from test_kernel import assert_close
from test_kernel_hostile import (BAD_ACTIVATIONS, BAD_INTEGERS, BAD_REALS, HOSTILE, ID_KINDS, INVALID,
                                 READ_KINDS, REUSE_KINDS, VALID, WRITE_KINDS, Arena, call, draw_array,
                                 draw_kind, draw_output, draw_scalar, draw_sizes, outcome)

K = layout.DIRECT_HISTORY


def make_classes(rng, V, C):
    """A class map of C classes of random sizes (C = V: one word each)."""
    cuts = np.sort(rng.choice(np.arange(1, V), size=C - 1, replace=False)) if C > 1 else []
    return np.concatenate([[0], cuts, [V]]).astype(np.int32)


def make_case(rng, T, B, H, V, C, order=0, D=37, reset_p=0.3, ignore_p=0.2, dtype=np.float32,
              history=True):
    """Arguments of class_forward: params, a batch with resets and ignored targets, a class
    map and, with order > 0, a direct table with weights large enough to matter."""
    params = (rng.standard_normal(layout.layout_size(V, H, C)) * 0.5).astype(dtype)
    inputs = rng.integers(0, V, (T, B)).astype(np.int32)
    targets = rng.integers(0, V, (T, B)).astype(np.int32)
    targets[rng.random((T, B)) < ignore_p] = -1
    resets = (rng.random((T, B)) < reset_p).astype(np.int32)
    hist = rng.integers(-1, V, (B, K)).astype(np.int32) if history else None
    return dict(params=params, inputs=inputs, targets=targets, resets=resets,
                h0=(rng.standard_normal((B, H)) * 0.5).astype(dtype),
                V=V, class_start=make_classes(rng, V, C), direct_order=order, history=hist,
                table=(rng.standard_normal(D) * 0.5).astype(dtype) if order else None)


def run(impl, case, *, loss_scale=0.7, direct_lr=0.3, direct_l2=0.01, direct_accum=None, **extra):
    """forward + backward: (loss, logprobs, hs, grads, dh0, table after the update, cache);
    with direct_accum (AdaGrad's sums of squares, updated in a copy) also those."""
    loss, logprobs, hs, cache = impl.class_forward(**case, **extra)
    grads = np.zeros_like(case["params"])
    table = None if case["table"] is None else case["table"].copy()
    accum = None if direct_accum is None else direct_accum.copy()
    dh0 = impl.class_backward(grads, cache, table=table, loss_scale=loss_scale,
                              direct_lr=direct_lr, direct_l2=direct_l2, direct_accum=accum)
    return (loss, logprobs, hs, grads, dh0, table, cache) + (() if accum is None else (accum,))


def slot_widths(case):
    """The used width of each dword row: the size of its position's class."""
    targets = case["targets"].reshape(-1)
    sizes = np.diff(case["class_start"])
    word_class = np.repeat(np.arange(sizes.size), sizes)
    return sizes[np.sort(word_class[targets[targets >= 0]])]


def assert_parity(c, r, case):
    """C kernel results == reference.py results within test_kernel.py's tolerances."""
    assert_close("loss", c[0], r[0], 1e-5, 1e-6)
    assert_close("logprobs", c[1], r[1], 1e-5, 1e-6)
    assert_close("hs", c[2], r[2], 1e-5, 1e-6)
    V, H, C = case["V"], case["h0"].shape[1], case["class_start"].size - 1
    for name, _ in layout.param_shapes(V, H, C):
        assert_close(f"d{name}", layout.param_views(c[3], V, H, C)[name],
                     layout.param_views(r[3], V, H, C)[name], 1e-4, 1e-5)
    assert_close("dh0", c[4], r[4], 1e-4, 1e-5)
    if case["table"] is not None:
        assert_close("table", c[5], r[5], 1e-5, 1e-6)
    assert_close("dclass", c[6].dclass, r[6].dclass, 1e-5, 1e-6)
    for k, width in enumerate(slot_widths(case)):
        assert_close(f"dword[{k}]", c[6].dword[k, :width], r[6].dword[k, :width], 1e-5, 1e-6)


@pytest.fixture
def rng():
    return np.random.default_rng(4321)


# ----------------------------------------------------------------------------------
# layout, class maps, history
# ----------------------------------------------------------------------------------

def test_num_params_with_classes_matches_layout():
    """The kernel's parameter count with C classes equals the layout's, whose views tile it
    with W_c and b_c last; C = 0 is the full-softmax layout."""
    for V, H, C in [(2, 1, 1), (11, 5, 3), (11, 5, 11), (10000, 256, 100)]:
        assert kernel.num_params(V, H, C) == layout.layout_size(V, H, C) == reference.num_params(V, H, C)
        assert kernel.num_params(V, H, C) == kernel.num_params(V, H) + C * H + C
        flat = np.arange(kernel.num_params(V, H, C), dtype=np.float32)
        views = kernel.param_views(flat, V, H, C)
        assert list(views) == list(layout.PARAM_NAMES + layout.CLASS_PARAM_NAMES)
        assert views["b_c"][-1] == flat[-1] and views["W_c"].shape == (C, H)
    with pytest.raises(KernelError, match=r"C = 6 is out of range \[0, 5\]"):
        kernel.num_params(5, 2, 6)


def test_limits_match_the_header():
    """layout.py's copies of rnn.h's direct-connection limits are the header's."""
    from rnnkit._rnn_cffi import lib
    assert layout.MAX_DIRECT_ORDER == lib.RNN_MAX_DIRECT_ORDER
    assert layout.DIRECT_HISTORY == lib.RNN_DIRECT_HISTORY == lib.RNN_MAX_DIRECT_ORDER - 2


def test_frequency_classes():
    """RNNLM's binning by sqrt frequency: frequent words get small classes, every class
    gets a word, and the extremes C = 1 and C = V work."""
    counts = 1e6 / np.arange(1, 10001)                     # Zipf
    start = layout.frequency_classes(counts, 100)
    sizes = np.diff(start)
    assert start[0] == 0 and start[-1] == 10000 and (sizes >= 1).all() and sizes.size == 100
    assert sizes[0] < 5 and sizes[-1] > 150
    mass = np.sqrt(counts)
    per_class = np.add.reduceat(mass, start[:-1])
    assert per_class.max() < 3 * mass.sum() / 100          # roughly equal sqrt mass
    assert list(layout.frequency_classes(np.ones(5), 5)) == [0, 1, 2, 3, 4, 5]
    assert list(layout.frequency_classes(np.ones(5), 1)) == [0, 5]
    assert list(layout.frequency_classes([1e9, 1, 1, 1], 3)) == [0, 1, 2, 4]   # one word, most mass
    with pytest.raises(KernelError, match=r"classes = 6 is out of range \[1, 5\]"):
        layout.frequency_classes(np.ones(5), 6)


def test_next_history():
    """The history after a batch: each row's inputs since its latest reset, continuing the
    previous history (up to its latest -1), oldest first, -1 padded."""
    inputs = np.array([[5, 6], [7, 8], [9, 3]], np.int32)            # (T = 3, B = 2)
    resets = np.array([[0, 0], [0, 1], [0, 0]], np.int32)
    before = np.array([[-1, -1, -1, -1, 1, -1, 2, 4], [1, 2, 3, 4, 5, 6, 7, 8]], np.int32)
    after = layout.next_history(before, inputs, resets)
    assert after.tolist() == [[-1, -1, -1, 2, 4, 5, 7, 9], [-1, -1, -1, -1, -1, -1, 8, 3]]
    assert layout.next_history(None, inputs, resets)[0].tolist() == [-1] * 5 + [5, 7, 9]
    long = np.arange(20, dtype=np.int32).reshape(10, 2)
    assert layout.next_history(None, long, np.zeros_like(long))[1].tolist() == list(range(5, 20, 2))


# ----------------------------------------------------------------------------------
# C == reference
# ----------------------------------------------------------------------------------

ODD_SHAPES = [  # T, B, H, V, C
    (1, 1, 1, 2, 1), (1, 1, 1, 2, 2), (7, 3, 5, 11, 1), (7, 3, 5, 11, 11), (5, 4, 17, 29, 6),
    (3, 2, 8, 130, 9), (4, 1, 3, 7, 3), (2, 5, 33, 40, 39),
]


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("order", [0, 1, 3, 10])
def test_class_parity(rng, shape, order):
    """Class forward (loss, log-probs, states, dclass, dword), every gradient, dh0 and the
    direct table's sparse update equal reference.py: B = 1, T = 1, H = 1, one class, C = V,
    classes of one word, ignored targets, resets, history, direct orders up to the maximum."""
    T, B, H, V, C = shape
    case = make_case(rng, T, B, H, V, C, order, D=int(rng.integers(1, 60)))
    assert_parity(run(kernel, case), run(reference, case), case)


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("order", [1, 3, 10])
def test_adagrad_parity(rng, shape, order):
    """With AdaGrad's sums of squares (some entries at 0) the table and the sums equal
    reference.py's, and so does everything else: the same shapes and orders as SGD."""
    T, B, H, V, C = shape
    case = make_case(rng, T, B, H, V, C, order, D=int(rng.integers(1, 60)))
    accum = (rng.random(case["table"].size) * (rng.random(case["table"].size) < 0.7)).astype(np.float32)
    c, r = run(kernel, case, direct_accum=accum), run(reference, case, direct_accum=accum)
    assert_parity(c, r, case)
    assert_close("direct_accum", c[7], r[7], 1e-5, 1e-6)


@pytest.mark.parametrize("activation", ["tanh", "logistic", "identity"])
@pytest.mark.parametrize("masks", ["in", "out", "both"])
def test_class_parity_with_dropout_and_activations(rng, activation, masks):
    """Dropout masks and every activation go through the class path as through forward."""
    T, B, H, V, C = 6, 3, 7, 23, 5
    case = make_case(rng, T, B, H, V, C, order=3)
    keep = np.float32(1 / 0.7)
    mask = {name: ((rng.random((T, B, H)) >= 0.3) * keep).astype(np.float32)
            for name in ("in_mask", "out_mask") if masks in (name[:-5], "both")}
    results = [run(impl, case, activation=activation, **mask) for impl in (kernel, reference)]
    assert_parity(*results, case)


def test_degenerate_class_batches(rng):
    """All targets ignored: zero loss, no gradient and an untouched table; every step
    resetting: nothing reaches h0."""
    case = make_case(rng, 5, 3, 4, 9, 3, order=4)
    case["targets"][:] = -1
    loss, logprobs, _, grads, dh0, table, _ = run(kernel, case)
    assert loss == 0.0 and not logprobs.any() and not dh0.any()
    assert np.array_equal(table, case["table"])
    V, H, C = 9, 4, 3
    g = layout.param_views(grads, V, H, C)
    assert not g["W_c"].any() and not g["W_hy"].any() and not g["b_y"].any()
    case = make_case(rng, 5, 3, 4, 9, 3, order=4)
    case["resets"][:] = 1
    c, r = run(kernel, case), run(reference, case)
    assert_parity(c, r, case)
    assert not c[4].any()


def test_gradient_touches_only_the_used_classes(rng):
    """Only the target classes' rows of W_hy and b_y get output-layer gradient."""
    V, H, C = 20, 4, 5
    case = make_case(rng, 4, 2, H, V, C)
    case["class_start"] = np.array([0, 4, 8, 12, 16, 20], np.int32)
    case["targets"] = np.where(rng.random((4, 2)) < 0.5, 5, 9).astype(np.int32)   # classes 1, 2
    case["targets"][0] = [5, 9]
    case["inputs"][:] = 0                                                          # no W_xh rows there
    grads = run(kernel, case)[3]
    g = layout.param_views(grads, V, H, C)
    used = np.zeros(V, bool)
    used[4:12] = True
    assert g["W_hy"][used].any(axis=1).all() and not g["W_hy"][~used].any()
    assert not g["b_y"][~used].any()


def test_scoring_mode_equals_training_mode(rng):
    """class_forward without kept dclass/dword (blocks of rows in the workspace) gives the
    same loss and log-probs; 300 positions with C + M ~ 35000 make three blocks."""
    T, B, H, V = 100, 3, 4, 70000
    case = make_case(rng, T, B, H, V, 3, order=2)
    case["class_start"] = np.array([0, 1, 35000, V], np.int32)
    a = kernel.class_forward(**case, keep_for_backward=True)
    b = kernel.class_forward(**case, keep_for_backward=False)
    assert_close("loss", a[0], b[0], 1e-6, 1e-6)
    assert_close("logprobs", a[1], b[1], 1e-6, 1e-7)
    assert b[3].dclass is None and b[3].dword is None
    with pytest.raises(KernelError, match="keep_for_backward"):
        kernel.class_backward(np.zeros_like(case["params"]), b[3], table=case["table"])


def test_direct_connections_change_scores(rng):
    """A nonzero table moves the scores; a zero table gives the scores without it."""
    case = make_case(rng, 6, 2, 5, 13, 4, order=3)
    with_table = kernel.class_forward(**case)[1]
    without = kernel.class_forward(**{**case, "table": None, "direct_order": 0})[1]
    zeros = kernel.class_forward(**{**case, "table": np.zeros(37, np.float32)})[1]
    assert np.abs(with_table - without).max() > 1e-2
    assert np.array_equal(zeros, without)


# ----------------------------------------------------------------------------------
# finite differences (float64 reference)
# ----------------------------------------------------------------------------------

def relative_error(analytic, numeric):
    return abs(analytic - numeric) / max(abs(analytic) + abs(numeric), 1e-12)


@pytest.mark.parametrize("C", [1, 3, 7])
def test_class_gradient_matches_finite_differences(C):
    """reference.py's class gradients (every parameter, class weights included, and h0)
    and its direct-table update (lr 1, no L2: the change is minus the gradient) agree with
    central differences in float64."""
    rng = np.random.default_rng(17 + C)
    T, B, H, V = 5, 3, 4, 7
    case = make_case(rng, T, B, H, V, C, order=3, D=23, dtype=np.float64)
    case["h0"] = case["h0"].astype(np.float64)
    case["resets"][0] = [0, 1, 0]

    def loss_of(**changed):
        return reference.class_forward(**{**case, **changed}, keep_for_backward=False)[0]

    _, _, _, grads, dh0, table, _ = run(reference, case, loss_scale=1.0, direct_lr=1.0, direct_l2=0.0)
    dtable = case["table"] - table
    assert np.abs(dtable).sum() > 0
    delta = 1e-6

    def check(name, array, index, analytic):
        plus, minus = array.copy(), array.copy()
        plus.flat[index] += delta
        minus.flat[index] -= delta
        numeric = (loss_of(**{name: plus}) - loss_of(**{name: minus})) / (2 * delta)
        assert relative_error(analytic, numeric) < 1e-6 or abs(analytic - numeric) < 1e-9, \
            f"{name}[{index}]: {analytic} vs {numeric}"

    offset = 0
    for name, shape in layout.param_shapes(V, H, C):
        size = int(np.prod(shape))
        for i in rng.choice(size, size=min(8, size), replace=False):
            check("params", case["params"], offset + i, grads[offset + i])
        offset += size
    for j in range(case["table"].size):                      # every entry, used or not
        check("table", case["table"], j, dtable[j])
    for i in range(B * H):
        check("h0", case["h0"], i, dh0.flat[i])


def test_l2_update_rule():
    """The sparse step with L2 follows rnn.h's rule w - lr (scale g + l2 w) on the entries
    used, once per use, and leaves the other entries untouched."""
    rng = np.random.default_rng(3)
    case = make_case(rng, 3, 2, 4, 9, 3, order=2, D=1000)
    old = case["table"].copy()
    _, _, _, _, _, lr_only, _ = run(kernel, case, loss_scale=0.5, direct_lr=0.2, direct_l2=0.0)
    _, _, _, _, _, with_l2, _ = run(kernel, case, loss_scale=0.5, direct_lr=0.2, direct_l2=0.1)
    used = lr_only != old
    assert 0 < used.sum() < old.size and np.array_equal(with_l2 != old, used)
    # with L2 each use also pulls the weight towards 0 by lr * l2 * w: smaller magnitude
    assert (np.abs(with_l2[used]) < np.abs(lr_only[used]) + 1e-6).all()


def adagrad_by_hand(table, accum, uses, lr, l2, scale):
    """rnn.h's AdaGrad rule applied in float32 to the (entry, gradient) pairs in `uses`,
    one by one in the order given."""
    table, accum = table.copy(), accum.copy()
    lr, l2, scale, eps = np.float32(lr), np.float32(l2), np.float32(scale), np.float32(1e-8)
    for i, g in uses:
        u = scale * g + l2 * table[i]
        accum[i] += u * u
        table[i] = table[i] - lr * u / np.sqrt(accum[i] + eps)
    return table, accum


def test_adagrad_update_rule_on_entries_used_several_times():
    """One class and the bias feature alone, in a table of exactly C + V entries: every
    position uses every entry, in dword's row order. The kernel's table and sums of squares
    are rnn.h's rule applied use by use in that order (the order matters: applied backwards
    the uses give other weights); the class entry, whose gradient is 0 with one class,
    takes steps of 0 from sums of 0 (the eps keeps 0 / 0 out)."""
    rng = np.random.default_rng(11)
    T, B, H, V, C = 5, 2, 3, 4, 1
    case = make_case(rng, T, B, H, V, C, order=1, D=C + V, ignore_p=0.0)
    case["table"][:] = rng.standard_normal(C + V).astype(np.float32)
    (class_entry,) = reference._features(1, C + V, [])      # the bias feature's hash: unit 0's entry
    case["table"][class_entry] = 0.0
    accum = np.zeros(C + V, np.float32)
    loss_scale, lr, l2 = 0.5, 0.2, 0.0
    _, _, _, _, _, new_table, cache, new_accum = run(kernel, case, loss_scale=loss_scale, direct_lr=lr,
                                                     direct_l2=l2, direct_accum=accum)
    uses = [((class_entry + C + w) % (C + V), cache.dword[k, w]) for k in range(T * B) for w in range(V)]
    uses += [(class_entry, cache.dclass.reshape(-1, C)[n, 0]) for n in range(T * B)]
    want_table, want_accum = adagrad_by_hand(case["table"], accum, uses, lr, l2, loss_scale)
    assert_close("table", new_table, want_table, 1e-6, 1e-7)
    assert_close("direct_accum", new_accum, want_accum, 1e-6, 1e-7)
    backwards, _ = adagrad_by_hand(case["table"], accum, uses[::-1], lr, l2, loss_scale)
    assert np.abs(backwards - want_table).max() > 1e-3
    assert new_table[class_entry] == 0.0 and new_accum[class_entry] == 0.0
    # one use of a fresh entry moves it by the rate, whatever its gradient's size
    one = make_case(rng, 1, 1, H, V, C, order=1, D=C + V, ignore_p=0.0)
    table = run(kernel, one, loss_scale=loss_scale, direct_lr=lr, direct_l2=l2, direct_accum=accum)[5]
    moved = np.delete(np.abs(table - one["table"]), class_entry)
    np.testing.assert_allclose(moved, lr, rtol=1e-3)


# ----------------------------------------------------------------------------------
# the full distribution, incremental scoring, batch independence
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("order", [0, 4])
@pytest.mark.parametrize("C", [1, 4, 13])
def test_step_distribution_sums_to_one(rng, order, C):
    """class_step's full distribution equals the reference and sums to 1 (with and without
    direct connections); its target entries are what class_forward with T = 1 scores, the
    cheaper path."""
    B, H, V = 3, 8, 13
    case = make_case(rng, 1, B, H, V, C, order)
    tokens = case["inputs"][0].copy()
    args = dict(V=V, class_start=case["class_start"], table=case["table"], direct_order=order,
                history=case["history"])
    h_c, lp_c = kernel.class_step(case["params"], case["h0"], tokens, **args)
    h_r, lp_r = reference.class_step(case["params"], case["h0"], tokens, **args)
    assert_close("h", h_c, h_r, 1e-5, 1e-6)
    assert_close("logprobs", lp_c, lp_r, 1e-5, 1e-6)
    np.testing.assert_allclose(np.exp(lp_c.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)
    targets = rng.integers(0, V, (1, B)).astype(np.int32)
    _, logp, hs, _ = kernel.class_forward(**{**case, "targets": targets, "resets": np.zeros((1, B), np.int32)},
                                          keep_for_backward=False)
    np.testing.assert_allclose(hs[0], h_c, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logp[0], lp_c[np.arange(B), targets[0]], rtol=1e-5, atol=1e-6)


def test_stepping_reproduces_forward(rng):
    """Stepping through a sequence with the history carried by next_history gives
    class_forward's target log-probabilities."""
    T, B, H, V = 12, 2, 6, 17
    case = make_case(rng, T, B, H, V, 5, order=5, ignore_p=0.0, reset_p=0.0, history=False)
    case["resets"][:] = 0
    case["resets"][0] = 1
    _, logp, _, _ = kernel.class_forward(**case)
    h, history = case["h0"] * 0, None
    args = dict(V=V, class_start=case["class_start"], table=case["table"], direct_order=5)
    for t in range(T):
        tokens = np.ascontiguousarray(case["inputs"][t])
        h, lp = kernel.class_step(case["params"], h, tokens, history=history, **args)
        np.testing.assert_allclose(lp[np.arange(B), case["targets"][t]], logp[t], rtol=1e-5, atol=1e-6)
        history = layout.next_history(history, tokens[None], np.zeros((1, B), np.int32))


def score_lanes(case, sentences, B, T):
    """Per-sentence scores with the sentences packed into B lanes and windows of T steps,
    the state and the direct history carried from window to window."""
    from rnnkit import batching
    lanes = batching.split_lanes(batching.make_stream(sentences), B)
    out = np.zeros((lanes.steps, lanes.width))
    h = np.zeros((lanes.width, case["h0"].shape[1]), np.float32)
    history = None
    step = 0
    for inputs, targets, resets in lanes.windows(T):
        _, logp, hs, _ = kernel.class_forward(
            case["params"], inputs, targets, resets, h, V=case["V"], class_start=case["class_start"],
            table=case["table"], direct_order=case["direct_order"], history=history,
            keep_for_backward=False)
        out[step:step + len(inputs)] = logp
        h, history = hs[-1].copy(), layout.next_history(history, inputs, resets)
        step += len(inputs)
    flat = lanes.unlane(out)
    lengths = [len(s) + 1 for s in sentences]
    return np.split(flat, np.cumsum(lengths)[:-1])


def test_sentence_score_does_not_depend_on_its_batch(rng):
    """A sentence scores the same alone, side by side with others, or cut across windows
    (state and direct history carried), with and without direct connections."""
    V = 31
    sentences = [rng.integers(3, V, n).astype(np.int32) for n in (1, 9, 4, 15, 2, 7)]
    for order in (0, 6):
        case = make_case(rng, 1, 1, 7, V, 6, order)
        alone = [score_lanes(case, [s], 1, 64)[0] for s in sentences]
        for B, T in [(3, 4), (2, 1), (6, 64)]:
            for got, want in zip(score_lanes(case, sentences, B, T), alone):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_reset_clears_the_direct_history(rng):
    """What comes before a reset (inputs, history) does not change the scores after it."""
    case = make_case(rng, 8, 2, 5, 19, 4, order=6)
    case["resets"][:] = 0
    case["resets"][4] = 1
    _, logp, _, _ = kernel.class_forward(**case)
    other = {**case, "inputs": case["inputs"].copy(), "history": (case["history"] + 1) % 19}
    other["inputs"][:4] = (other["inputs"][:4] + 5) % 19
    _, logp_other, _, _ = kernel.class_forward(**other)
    assert np.array_equal(logp[4:], logp_other[4:])
    assert not np.array_equal(logp[:4], logp_other[:4])


# ----------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("adagrad", [False, True], ids=["sgd", "adagrad"])
def test_training_steps_are_bit_identical(rng, adagrad):
    """Three class training steps with the sparse table update (SGD or AdaGrad), twice from
    the same seed, give identical bits; so do 1 and 2 threads."""
    base = make_case(rng, 20, 8, 32, 500, 20, order=4, D=5000)

    def train(threads):
        old = kernel.get_num_threads()
        kernel.set_num_threads(threads)
        try:
            case = {**base, "params": base["params"].copy(), "table": base["table"].copy()}
            accum = np.ones_like(case["table"]) if adagrad else None
            grads = np.zeros_like(case["params"])
            losses, cache = [], None
            for _ in range(3):
                grads[:] = 0
                loss, _, _, cache = kernel.class_forward(**case, reuse=cache)
                kernel.class_backward(grads, cache, table=case["table"], loss_scale=1 / 160,
                                      direct_lr=0.5, direct_l2=1e-4, direct_accum=accum)
                kernel.sgd_update(case["params"], grads, 0.1)
                losses.append(loss)
            return losses, case["params"], case["table"]
        finally:
            kernel.set_num_threads(old)

    first, again, two = train(1), train(1), train(2)
    for a, b, c in zip(first, again, two):
        assert np.array_equal(a, b) and np.array_equal(a, c)


# ----------------------------------------------------------------------------------
# argument errors: one line naming the argument
# ----------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message, by_reference", [
    ({"class_start": np.array([0, 3, 3, 9], np.int32)},
     r"class_start must rise strictly \(no empty class\): class_start\[2\] = 3 after class_start\[1\] = 3", True),
    ({"class_start": np.array([1, 3, 9], np.int32)}, r"class_start must run from 0 to V = 9, got 1 \.\. 9", True),
    ({"class_start": np.array([0, 3, 8], np.int32)}, r"class_start must run from 0 to V = 9, got 0 \.\. 8", True),
    ({"class_start": np.array([0], np.int32)},
     r"class_start has 1 entries: C = 0 classes is out of range \[1, 9\]", True),
    ({"class_start": np.array([0, 3, 9], np.int64)}, r"class_start must have dtype int32, got int64", False),
    ({"class_start": [0, 3, 9]}, r"class_start must be a \(C \+ 1,\) int32 array, got list", False),
    ({"direct_order": 11}, r"direct_order = 11 is out of range \[0, 10\]", True),
    ({"direct_order": 0}, r"a direct-connection table was given with direct_order = 0", False),
    ({"table": None}, r"table must be a flat \(D,\) float32 array for direct_order = 2, got NoneType", True),
    ({"table": np.zeros(0, np.float32)}, r"table size D \(table.shape\[0\]\) = 0 is out of range", True),
    ({"table": np.zeros(5, np.float64)}, r"table must have dtype float32, got float64", False),
    ({"history": np.zeros((2, 7), np.int32)}, r"history has shape \(2, 7\), expected \(2, 8\)", False),
    ({"history": np.full((2, 8), 9, np.int32)},
     r"direct history id out of range \[-1, V\): history\[0, 0\] = 9, allowed \[-1, 8\]", True),
    ({"history": np.full((2, 8), -2, np.int32)},
     r"direct history id out of range \[-1, V\): history\[0, 0\] = -2, allowed \[-1, 8\]", True),
])
def test_bad_class_arguments(rng, change, message, by_reference):
    """A bad class map, order, table or history is a KernelError whose one line names it,
    for class_forward and class_step alike; the reference refuses the bad values too."""
    case = {**make_case(rng, 3, 2, 4, 9, 2, order=2), **change}
    with pytest.raises(KernelError, match=f"^{message}"):
        kernel.class_forward(**case)
    with pytest.raises(KernelError, match=f"^{message}"):
        kernel.class_step(case["params"], case["h0"], case["inputs"][0].copy(), V=9,
                          class_start=case["class_start"], table=case["table"],
                          direct_order=case["direct_order"], history=case["history"])
    if by_reference:
        with pytest.raises(KernelError):
            reference.class_forward(**case)


def test_backward_table_must_match_the_forward(rng):
    """class_backward refuses a table of another size than the forward read, a missing
    one, a read-only one, one sharing memory with the gradients, and negative rates."""
    case = make_case(rng, 3, 2, 4, 9, 2, order=2, D=40)
    cache = kernel.class_forward(**case)[3]
    grads = np.zeros_like(case["params"])
    with pytest.raises(KernelError, match=r"^table has 41 entries but the forward read one of 40$"):
        kernel.class_backward(grads, cache, table=np.zeros(41, np.float32))
    with pytest.raises(KernelError, match=r"^table must be a flat \(D,\) float32 array"):
        kernel.class_backward(grads, cache)
    frozen = case["table"].copy()
    frozen.setflags(write=False)
    with pytest.raises(KernelError, match=r"^table is read-only but is written by the kernel$"):
        kernel.class_backward(grads, cache, table=frozen)
    with pytest.raises(KernelError, match=r"^grads must not share memory with table$"):
        kernel.class_backward(grads, cache, table=grads[:40])
    with pytest.raises(KernelError, match=r"^direct_lr = -0.1 is out of range"):
        kernel.class_backward(grads, cache, table=case["table"], direct_lr=-0.1)
    with pytest.raises(KernelError, match=r"^direct_l2 = nan is out of range"):
        kernel.class_backward(grads, cache, table=case["table"], direct_l2=float("nan"))
    assert not grads.any()
    with pytest.raises(KernelError, match=r"^cache must be the ClassForwardCache"):
        kernel.class_backward(grads, kernel.forward(case["params"][:kernel.num_params(9, 4)],
                                                    case["inputs"], case["targets"], case["resets"],
                                                    case["h0"], V=9)[3])


@pytest.mark.parametrize("accum, message", [
    (np.zeros(41, np.float32), r"direct_accum has shape \(41,\), expected \(40,\)"),
    (np.zeros((40, 1), np.float32), r"direct_accum has shape \(40, 1\), expected \(40,\)"),
    (np.zeros(40, np.float64), r"direct_accum must have dtype float32, got float64"),
    (np.zeros(80, np.float32)[::2], r"direct_accum must be C-contiguous"),
    (np.zeros(40, np.float32).tolist(), r"direct_accum must be a numpy array, got list"),
    ("read-only", r"direct_accum is read-only but is written by the kernel"),
    ("the table", r"table must not share memory with direct_accum"),
    ("the gradients", r"grads must not share memory with direct_accum"),
])
def test_backward_checks_the_adagrad_sums(rng, accum, message):
    """class_backward refuses sums of squares of another size or kind than the table, read-
    only ones and ones sharing memory with what it writes; nothing is written then."""
    case = make_case(rng, 3, 2, 4, 9, 2, order=2, D=40)
    cache = kernel.class_forward(**case)[3]
    grads, table = np.zeros_like(case["params"]), case["table"].copy()
    if isinstance(accum, str):
        frozen = np.zeros(40, np.float32)
        frozen.setflags(write=False)
        accum = {"read-only": frozen, "the table": table, "the gradients": grads[:40]}[accum]
    with pytest.raises(KernelError, match=f"^{message}"):
        kernel.class_backward(grads, cache, table=table, direct_lr=0.1, direct_accum=accum)
    assert not grads.any() and np.array_equal(table, case["table"])


def test_adagrad_sums_need_direct_connections(rng):
    case = make_case(rng, 3, 2, 4, 9, 2, order=0)
    cache = kernel.class_forward(**case)[3]
    with pytest.raises(KernelError, match=r"^direct_accum was given without direct connections"):
        kernel.class_backward(np.zeros_like(case["params"]), cache, direct_accum=np.zeros(4, np.float32))


def test_backward_accumulates(rng):
    """Two class_backward calls without zeroing give twice the gradient (no table update)."""
    case = make_case(rng, 6, 3, 5, 13, 4, order=3)
    cache = kernel.class_forward(**case)[3]
    once, twice = np.zeros_like(case["params"]), np.zeros_like(case["params"])
    kernel.class_backward(once, cache, table=case["table"])
    for _ in range(2):
        kernel.class_backward(twice, cache, table=case["table"])
    np.testing.assert_allclose(twice, 2 * once, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------
# hostile arguments (test_kernel_hostile.py's machinery)
# ----------------------------------------------------------------------------------

CLASS_KINDS = ID_KINDS     # with low=1, high=V+1: an inner boundary 0 (an empty class), or V + 1
BAD_ORDERS = [-1, 11, 2**31, 2**63, "3", None, True, 3.0, np.float64(3), np.array(3), [3]]


def hostile_case(data, orders=(0, 1, 3)):
    """Sizes, classes, direct order (one of `orders`) and table size drawn for one hostile
    example."""
    T, B, H, V = draw_sizes(data)
    C = data.draw(st.integers(1, V), label="C")
    order = data.draw(st.sampled_from(orders), label="order")
    D = data.draw(st.integers(1, 12), label="D")
    seed = data.draw(st.integers(0, 999), label="seed")
    case = make_case(np.random.default_rng(seed), T, B, H, V, C, order, D,
                     history=data.draw(st.booleans(), label="history"))
    return case, (T, B, H, V, C, order, D)


def order_zero_table(data, arena, corrupt):
    """The table argument with direct_order 0: None, or when corrupted any array (invalid)."""
    if "table" not in corrupt:
        return None, VALID
    kind = data.draw(st.sampled_from(sorted(k for k in WRITE_KINDS if k != "none")), label="table")
    return arena.make(np.zeros(3, np.float32), kind), INVALID


def draw_direct_args(data, arena, case, corrupt, table_kinds):
    """class_start, history, table and direct_order as drawn: (args, classes, effective
    history and table the reference must use)."""
    args, classes = {}, []
    V, order, D = case["V"], case["direct_order"], 0 if case["table"] is None else case["table"].size
    args["class_start"], cls = draw_array(data, arena, "class_start", case["class_start"], CLASS_KINDS,
                                          corrupt, low=1, high=V + 1)
    arena.keep(args["class_start"])
    classes.append(cls)
    history = case["history"] if case["history"] is not None else np.full((case["h0"].shape[0], K), -1, np.int32)
    kinds = {**ID_KINDS, "none": VALID}            # None: nothing before step 0
    kind = draw_kind(data, "history", kinds, corrupt)
    args["history"] = arena.make(history, kind, low=-1, high=V)
    arena.keep(args["history"])
    classes.append(kinds[kind])
    if order:             # another length is another valid table ("wider" too, for 1-D)
        kinds = {**table_kinds, "longer": VALID, "wider": VALID, "shorter": VALID if D > 1 else INVALID}
        kind = draw_kind(data, "table", kinds, corrupt)
        args["table"], cls = arena.make(case["table"], kind), kinds[kind]
    else:
        args["table"], cls = order_zero_table(data, arena, corrupt)
    classes.append(cls)
    args["direct_order"], cls = draw_scalar(data, "direct_order", [order, np.int64(order)], BAD_ORDERS, corrupt)
    classes.append(cls)
    effective = {"history": None if args["history"] is None else history,
                 "table": None if args["table"] is None else np.array(args["table"], np.float32).reshape(-1)}
    return args, classes, effective


@HOSTILE
@given(st.data())
def test_class_forward_hostile(data):
    """class_forward with corrupted arrays, class maps, histories, tables, orders, sizes and
    reuse caches: KernelError or the reference's results; inputs never written."""
    case, (T, B, H, V, C, order, D) = hostile_case(data)
    fields = ["params", "inputs", "targets", "resets", "h0", "class_start", "history", "table",
              "direct_order", "V", "activation", "keep_for_backward", "reuse"]
    corrupt = data.draw(st.sets(st.sampled_from(fields), min_size=1, max_size=2), label="corrupt")
    clean_cache = kernel.class_forward(**case)[3]
    arena = Arena()
    args, classes = {}, []
    for name in ("params", "h0", "inputs", "targets", "resets"):
        low, high = {"inputs": (0, V), "targets": (-1, V), "resets": (0, 2)}.get(name, (0, None))
        kinds = ID_KINDS if name in ("inputs", "targets", "resets") else READ_KINDS
        args[name], cls = draw_array(data, arena, name, case[name], kinds, corrupt, low=low, high=high)
        arena.keep(args[name])
        classes.append(cls)
    direct, direct_classes, effective = draw_direct_args(data, arena, case, corrupt, READ_KINDS)
    if direct["table"] is not None:
        arena.keep(direct["table"])
    args.update(direct)
    classes += direct_classes
    args["V"], cls_v = draw_scalar(data, "V", [V, np.int64(V)], [V + 1, V - 1] + BAD_INTEGERS, corrupt)
    args["activation"], cls_a = draw_scalar(data, "activation", ["tanh"], BAD_ACTIVATIONS, corrupt)
    args["keep_for_backward"], cls_k = draw_scalar(data, "keep_for_backward", [True, False],
                                                   [1, None, "yes"], corrupt)
    reuse, cls_r = clean_cache, VALID
    if "reuse" in corrupt:
        choice = data.draw(st.sampled_from(["forged", "not_a_cache"]), label="reuse")
        if choice == "not_a_cache":
            reuse, cls_r = data.draw(st.sampled_from([5, "cache", dataclasses.replace]), label="object"), INVALID
        else:
            forged = {}
            for name in ("hs", "work", "dclass", "dword"):
                kind = data.draw(st.sampled_from(sorted(REUSE_KINDS)), label=f"reuse.{name}")
                old = getattr(clean_cache, name)
                if name == "work":          # scratch: its contents (int32 bits too) do not matter
                    old = np.zeros_like(old)
                forged[name] = (np.zeros(old.shape, np.uint8) if kind == "owned_uint8"
                                else arena.make(old, "readonly" if kind == "owned_readonly" else kind))
                arena.keep(forged[name])    # never written: class_forward must allocate instead
            reuse = dataclasses.replace(clean_cache, **forged)
    expected = outcome(classes + [cls_v, cls_a, cls_k, cls_r])

    accepted, result = call(kernel.class_forward, expected, **args, reuse=reuse)
    arena.check()
    if accepted:
        loss, logprobs, hs, cache = result
        r = reference.class_forward(**{**case, **effective})
        assert_close("loss", loss, r[0], 1e-4, 1e-5)
        assert_close("logprobs", logprobs, r[1], 1e-4, 1e-5)
        assert_close("hs", hs, r[2], 1e-4, 1e-5)
        if args["keep_for_backward"]:
            assert_close("dclass", cache.dclass, r[3].dclass, 1e-4, 1e-5)


CLASS_CACHE_ARRAYS = ["inputs", "targets", "resets", "history", "h0", "params", "hs", "dclass",
                      "dword", "class_start", "work"]


@HOSTILE
@given(st.data())
def test_class_backward_hostile(data):
    """class_backward with a forged cache (any field), hostile grads / dh0 / table and
    scalars: KernelError with nothing written, or the reference's gradients and table."""
    case, (T, B, H, V, C, order, D) = hostile_case(data)
    cache = kernel.class_forward(**case)[3]
    fields = CLASS_CACHE_ARRAYS + ["V", "activation", "direct_order", "cache", "grads", "dh0",
                                   "table", "direct_accum", "loss_scale", "direct_lr", "direct_l2"]
    corrupt = data.draw(st.sets(st.sampled_from(fields), min_size=1, max_size=2), label="corrupt")
    arena = Arena()
    forged, classes = {}, []
    for name in CLASS_CACHE_ARRAYS:
        values = getattr(cache, name)
        if values is None:             # no history: None stays the clean value
            continue
        if name == "work":             # scratch: its contents (int32 bits too) do not matter
            values = np.zeros_like(values)
            kinds = {kind: VALID for kind in READ_KINDS}
        elif name == "history":       # None would be valid: nothing before step 0
            kinds = {k: c for k, c in ID_KINDS.items() if k != "none"}
        elif name in ("inputs", "targets", "resets"):
            kinds = ID_KINDS
        elif name == "class_start":
            kinds = CLASS_KINDS
        else:
            kinds = READ_KINDS
        low, high = {"inputs": (0, V), "targets": (-1, V), "resets": (0, 2), "history": (-1, V),
                     "class_start": (1, V + 1)}.get(name, (0, None))
        forged[name], cls = draw_array(data, arena, name, values, kinds, corrupt, low=low, high=high)
        arena.keep(forged[name])
        classes.append(cls)
    forged["V"], cls = draw_scalar(data, "V", [V, np.int64(V)], [V + 1, V - 1] + BAD_INTEGERS, corrupt)
    classes.append(cls)
    forged["activation"], cls = draw_scalar(data, "activation", ["tanh"], BAD_ACTIVATIONS, corrupt)
    classes.append(cls)
    forged["direct_order"], cls = draw_scalar(data, "direct_order", [order], BAD_ORDERS, corrupt)
    classes.append(cls)
    forged_cache = dataclasses.replace(cache, **forged)
    if "cache" in corrupt:
        forged_cache = data.draw(st.sampled_from([None, vars(forged_cache), dataclasses.replace(forged_cache, dword=None)]),
                                 label="cache")
        classes.append(INVALID)

    rng = np.random.default_rng(5)
    grads_init = rng.standard_normal(layout.layout_size(V, H, C)).astype(np.float32)
    dh0_init = rng.standard_normal((B, H)).astype(np.float32)
    grads, cls_g = draw_output(data, arena, "grads", grads_init, corrupt, alias=forged["params"])
    dh0, cls_d = draw_output(data, arena, "dh0", dh0_init, corrupt, none_is_valid=True)
    if order:
        alias = forged["params"][:D] if isinstance(forged["params"], np.ndarray) and forged["params"].size >= D else None
        table, cls_t = draw_output(data, arena, "table", case["table"], corrupt, alias=alias)
    else:
        table, cls_t = order_zero_table(data, arena, corrupt)
    accum, cls_acc = draw_accum(data, arena, case, table, corrupt)
    scale, cls_s = draw_scalar(data, "loss_scale", [0.7, np.float32(0.7)], BAD_REALS, corrupt)
    lr, cls_lr = draw_scalar(data, "direct_lr", [0.3, 0], [-0.1] + BAD_REALS, corrupt)
    l2, cls_l2 = draw_scalar(data, "direct_l2", [0.01, 0.0], [-1.0] + BAD_REALS, corrupt)
    expected = outcome(classes + [cls_g, cls_d, cls_t, cls_acc, cls_s, cls_lr, cls_l2])
    outputs = [(a, a.copy()) for a in (grads, dh0, table, accum) if isinstance(a, np.ndarray)]

    accepted, result = call(kernel.class_backward, expected, grads, forged_cache, table=table,
                            loss_scale=scale, direct_lr=lr, direct_l2=l2, dh0=dh0, direct_accum=accum)
    arena.check()
    if not accepted:
        for array, before in outputs:
            assert array.tobytes() == before.tobytes(), "a refused call wrote into an output"
        return
    r_cache = reference.class_forward(**case)[3]
    r_grads = np.zeros_like(grads_init)
    r_table = None if case["table"] is None else case["table"].copy()
    r_accum = None if accum is None else ACCUM_START.copy()[:case["table"].size]
    r_dh0 = reference.class_backward(r_grads, r_cache, table=r_table, loss_scale=float(scale),
                                     direct_lr=float(lr), direct_l2=float(l2), direct_accum=r_accum)
    assert_close("grads", grads, grads_init + r_grads, 1e-4, 1e-5)
    assert_close("dh0", result, r_dh0 + (0 if dh0 is None else dh0_init), 1e-4, 1e-5)
    if order:
        assert_close("table", table, r_table, 1e-4, 1e-5)
    if accum is not None:
        assert_close("direct_accum", accum, r_accum, 1e-4, 1e-5)


ACCUM_START = np.linspace(0.0, 2.0, 12, dtype=np.float32)   # AdaGrad's sums of squares, for D <= 12


def draw_accum(data, arena, case, table, corrupt):
    """class_backward's direct_accum: None (SGD) unless drawn; with direct connections any
    of the output kinds (the table itself: an alias), without them an array is invalid."""
    if not case["direct_order"]:
        if "direct_accum" not in corrupt:
            return None, VALID
        return arena.make(ACCUM_START[:3], data.draw(st.sampled_from(["ok", "readonly"]), label="direct_accum")), INVALID
    if "direct_accum" not in corrupt and data.draw(st.booleans(), label="sgd"):
        return None, VALID
    return draw_output(data, arena, "direct_accum", ACCUM_START[:case["table"].size], corrupt,
                       alias=table if isinstance(table, np.ndarray) else None, none_is_valid=True)


@HOSTILE
@given(st.data())
def test_class_step_hostile(data):
    """class_step with corrupted params, state, tokens, class map, history, table, order, V
    and activation: KernelError or the reference's state and full distribution."""
    case, (T, B, H, V, C, order, D) = hostile_case(data)
    case["tokens"] = case["inputs"][0].copy()
    corrupt = data.draw(st.sets(st.sampled_from(["params", "h0", "tokens", "class_start", "history",
                                                 "table", "direct_order", "V", "activation"]),
                                min_size=1, max_size=2), label="corrupt")
    arena = Arena()
    args, classes = {}, []
    for name in ("params", "h0", "tokens"):
        kinds = ID_KINDS if name == "tokens" else READ_KINDS
        args[name], cls = draw_array(data, arena, name, case[name], kinds, corrupt, low=0, high=V)
        arena.keep(args[name])
        classes.append(cls)
    direct, direct_classes, effective = draw_direct_args(data, arena, case, corrupt, READ_KINDS)
    if direct["table"] is not None:
        arena.keep(direct["table"])
    classes += direct_classes
    V_arg, cls_v = draw_scalar(data, "V", [V, np.int64(V)], [V + 1, V - 1] + BAD_INTEGERS, corrupt)
    act, cls_a = draw_scalar(data, "activation", ["tanh"], BAD_ACTIVATIONS, corrupt)

    accepted, result = call(kernel.class_step, outcome(classes + [cls_v, cls_a]), args["params"], args["h0"],
                            args["tokens"], V=V_arg, activation=act, **direct)
    arena.check()
    if accepted:
        r_h, r_logprobs = reference.class_step(case["params"], case["h0"], case["tokens"], V=V,
                                               class_start=case["class_start"], direct_order=order,
                                               **effective)
        assert_close("h", result[0], r_h, 1e-4, 1e-5)
        assert_close("logprobs", result[1], r_logprobs, 1e-4, 1e-5)
