"""The optimizer's single pass (the step, the weight decay and the moving average together)
and the direct table's lazily kept average (kernel.average_catch_up, train.TableAverage):
bit for bit the separate passes, the eager average up to rounding, in training and in a
mid-epoch checkpoint."""

import numpy as np
import pytest

from rnnkit import kernel, reference, rnnlm
from rnnkit.errors import KernelError
from rnnkit.train import TrainConfig, train

from test_train_interrupt import KOREAN, VALID

# above rnn.c's 2^20 floats per thread, so that two threads split the pass
LONG = 2**21 + 13


def separate_passes(params, average, shrink, fraction):
    """What the trainer did after the step before the passes were fused."""
    params *= np.float32(shrink)
    scratch = params - average
    scratch *= np.float32(fraction)
    average += scratch


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("n, threads", [(1, 1), (1000, 1), (LONG, 2)])
def test_step_with_decay_and_average_is_the_separate_passes(optimizer, n, threads):
    rng = np.random.default_rng(5)
    params, average = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    grads = (rng.standard_normal(n) * 0.1).astype(np.float32)
    moments = [np.abs(rng.standard_normal(n)).astype(np.float32) * 0.01 for _ in range(2)]
    fused, apart, twin = ([a.copy() for a in (params, average, *moments)] for _ in range(3))
    shrink, fraction = 1.0 - 2e-3 * 0.3, 0.01
    old = kernel.get_num_threads()
    kernel.set_num_threads(threads)
    try:
        for step in (1, 2, 3):
            for impl, (p, a, m, v) in ((kernel, fused), (reference, twin)):
                if optimizer == "adam":
                    impl.adam_update(p, grads, m, v, step, 2e-3, shrink=shrink, average=a, fraction=fraction)
                else:
                    impl.sgd_update(p, grads, 0.5, shrink=shrink, average=a, fraction=fraction)
            p, a, m, v = apart
            if optimizer == "adam":
                kernel.adam_update(p, grads, m, v, step, 2e-3)
            else:
                kernel.sgd_update(p, grads, 0.5)
            separate_passes(p, a, shrink, fraction)
    finally:
        kernel.set_num_threads(old)
    for got, expected, close in zip(fused, apart, twin):
        assert np.array_equal(got, expected)
        np.testing.assert_allclose(got, close, rtol=1e-5, atol=1e-6)


def test_step_refuses_a_bad_average():
    params, grads = np.ones(4, np.float32), np.ones(4, np.float32)
    for kwargs, message in [({"average": params}, "params must not share memory with average"),
                            ({"average": np.ones(3, np.float32)}, r"average has shape \(3,\), expected \(4,\)"),
                            ({"fraction": 1.5}, r"fraction = 1.5 is out of range \[0, 1\]"),
                            ({"shrink": -0.1}, r"shrink = -0.1 is out of range \[0, 1\]")]:
        with pytest.raises(KernelError, match=message):
            kernel.sgd_update(params, grads, 0.1, **kwargs)
    assert (params == 1).all()


def run_lazy(impl, raw_changes, D, decay, steps):
    """The trainer's protocol: before step t changes raw at some entries, those catch up to
    t - 1 and are recorded as synced there; at the end everything catches up (flush)."""
    rng = np.random.default_rng(11)
    raw = rng.standard_normal(D).astype(np.float32)
    average, synced = raw.copy(), np.zeros(D, np.int32)
    log_decay = np.concatenate([[0.0], np.cumsum(np.log([decay(t) for t in range(1, steps + 1)]))])
    for t, (entries, values) in enumerate(raw_changes, start=1):
        impl.average_catch_up(average, raw, synced, log_decay, t - 1, entries)
        synced[entries] = t - 1
        raw[entries] = values
    impl.average_catch_up(average, raw, synced, log_decay, steps)
    return average, raw


def test_lazy_average_is_the_eager_one():
    """Caught up only where and when the raw values change, the average is the one updated
    at every step (float64 here), within float32 rounding; reference.py agrees."""
    D, steps = 500, 300
    rng = np.random.default_rng(3)

    def decay(t):
        return min(0.99, (1.0 + t) / (10.0 + t))
    changes = []
    for _ in range(steps):
        entries = np.unique(rng.integers(0, D, rng.integers(0, 40)))
        changes.append((entries, rng.standard_normal(entries.size).astype(np.float32)))
    eager = np.random.default_rng(11).standard_normal(D)
    raw = eager.astype(np.float32)
    for t, (entries, values) in enumerate(changes, start=1):
        raw[entries] = values
        eager += (1.0 - decay(t)) * (raw - eager)
    lazy, final_raw = run_lazy(kernel, changes, D, decay, steps)
    twin, _ = run_lazy(reference, changes, D, decay, steps)
    assert np.array_equal(final_raw, raw)
    np.testing.assert_allclose(lazy, eager, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(lazy, twin, rtol=1e-6, atol=1e-7)


def test_average_catch_up_refuses_bad_arguments():
    average, raw = np.zeros(6, np.float32), np.ones(6, np.float32)
    synced, log_decay = np.array([0, 1, 2, 3, 4, 5], np.int32), np.log(np.full(8, 0.5)).cumsum()
    cases = [
        (dict(step=4), r"synced must hold steps in \[0, 4\]: synced\[5\] = 5, allowed \[0, 4\]"),
        (dict(step=8), r"step = 8 is out of range \[0, 7\]"),
        (dict(step=6, index=np.array([3, 1])), r"sparse index not rising strictly"),
        (dict(step=6, index=np.array([2, 6])), r"index\[1\] = 6, allowed \[0, 5\]"),
        (dict(step=6, synced=synced.astype(np.int64)), "synced must have dtype int32"),
        (dict(step=6, raw=average), "average must not share memory with raw"),
        (dict(step=6, log_decay=log_decay.astype(np.float32)), "log_decay must have dtype float64"),
    ]
    for change, message in cases:
        args = {"average": average, "raw": raw, "synced": synced, "log_decay": log_decay, "index": None, **change}
        with pytest.raises(KernelError, match=message):
            kernel.average_catch_up(**args)
        assert (average == 0).all(), "a refused call wrote into the average"
    kernel.average_catch_up(average, raw, synced, log_decay, 6, np.array([0, 5]))
    assert average[0] > average[5] > 0 and (average[1:5] == 0).all()


def test_training_keeps_the_eager_table_average(tmp_path):
    """A run resumed for a second epoch, checkpointing after every step: each checkpoint's
    table is the average of the raw tables so far (computed eagerly beside it), and holds
    the lazy state a resumed run goes on with; after the epoch the model's table is that
    average too (the one validation saw)."""
    config = dict(hidden=16, bptt=8, batch=4, seed=2, threads=1, optimizer="adam", lr=0.05, average=0.9,
                  classes=5, direct_order=3, direct_size=1024, direct_lr=0.3)
    model = train(KOREAN, VALID, TrainConfig(epochs=1, **config))
    raw = model.optimizer_arrays["raw_direct_table"]
    eager = model.direct_table.astype(np.float64)
    step = model.train_state["step"]
    path, seen = tmp_path / "m.model", []

    def follow(tokens, stats):
        nonlocal eager, step
        if path.exists():   # the checkpoint of the step before
            saved = rnnlm.RNNModel.load(path)
            np.testing.assert_allclose(saved.direct_table, eager, rtol=1e-5, atol=1e-6)
            synced = saved.optimizer_arrays["carry_direct_synced"]
            seen.append((synced.min(), synced.max(), saved.train_state["step"]))
        if tokens:
            step += 1
            eager += (1.0 - min(0.9, (1.0 + step) / (10.0 + step))) * (raw - eager)
    resumed = train(KOREAN, VALID, TrainConfig(epochs=2, checkpoint_minutes=1e-9, **config), output_path=path,
                    resume_from=model, progress=follow)
    assert resumed is model and model.record["epochs"][1]["kept"]
    np.testing.assert_allclose(model.direct_table, eager, rtol=1e-5, atol=1e-6)
    # the entries the last step used are up to date with the step before it (their change)
    assert len(seen) == 18 and all(high == now - 1 for _, high, now in seen)
    assert any(low < high for low, high, _ in seen), "some entries stay behind until they are used"
    assert np.array_equal(rnnlm.RNNModel.load(path).direct_table, model.direct_table)
