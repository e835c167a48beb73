"""Training-step and scoring speed: the C kernel against reference.py and PyTorch.

For DESIGN's configurations C1-C5, in one run and at each requested thread count:
a full training step (forward, cross-entropy, backward, clip 0.25, SGD) with the C
kernel, with reference.py and with PyTorch (nn.Embedding + nn.RNN(tanh) + nn.Linear
+ cross_entropy, same weights) when torch is importable; C5 scores one 20-token
sentence (forward only, B=1, T=20). Every implementation is checked against the C
kernel on the configuration's own inputs before anything is timed.

C1c, C4c and C5c are C1, C4 and C5 with the class-factored output (kernel.class_forward /
class_backward; round(sqrt(V)) classes binned by frequency as in RNNLM) on tokens drawn
from a Zipf distribution over the vocabulary, so that the class sizes are those of text
(the cost per token is (C + |class|) H); --direct-order adds the direct connections
(a table of --direct-size entries, updated sparsely in the step). PyTorch has no such
layer: their torch columns stay empty. GFLOP/s count the full-softmax model's work, so
for them they read as "full-softmax-equivalent" rates.

Reported: median (and min) ms per step, tokens/s (C5: sentences/s), ratios
C/PyTorch and C/reference, model GFLOP/s (6*B*T*H*(H+V) per step, 2*T*H*(H+V) per
scored sentence) against the machine's sgemm peak measured in the same run
(2048^3, the best of the kernel's OpenBLAS, NumPy's BLAS and torch), and the peak
memory of a C4 step (fresh subprocess per implementation, VmHWM above the RSS after
imports). Markdown on stdout, notes on stderr.

Each thread count runs in its own child process whose OPENBLAS/OMP/MKL thread
variables are set before NumPy or torch load, so NumPy's BLAS follows too; the
kernel and torch are also told in-process (kernel.set_num_threads,
torch.set_num_threads).

Note on PyTorch: nn.RNN has an input projection W_ih (H x H) that rnnkit folds into
the embedding; for the check W_ih = I and b_ih = 0, so the functions are identical,
but torch still does that projection's work (6*B*T*H*H more FLOPs per step, +72% on
C3, +2-5% on the others). The GFLOP/s columns use the rnnkit model count for all.

Example:
    python benchmarks/bench_kernel.py --threads 1 2 --json bench.json
    python benchmarks/bench_kernel.py --config C2 --threads 2 --repeats 5
    python benchmarks/bench_kernel.py --config C4 C5 --threads 1 --vocab 300 --hidden 16 \
        --repeats 1 --ref-repeats 1 --score-repeats 1 --peak-size 256   # a check in seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_support import positive_int

CONFIGS = {
    "C1": dict(V=10000, H=256, B=32, T=35),
    "C2": dict(V=10000, H=512, B=64, T=35),
    "C3": dict(V=200, H=512, B=64, T=64),
    "C4": dict(V=30000, H=256, B=32, T=35),
    "C5": dict(V=10000, H=256, B=1, T=20),   # scoring one 20-token sentence
    "C1c": dict(V=10000, H=256, B=32, T=35, classes=True),
    "C4c": dict(V=30000, H=256, B=32, T=35, classes=True),
    "C5c": dict(V=10000, H=256, B=1, T=20, classes=True),
}
SEED = 1234
LR = 0.1
MAX_NORM = 0.25
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
PEAK_SIZE = 2048
DIRECT_SIZE = 1 << 22     # direct-connection table entries (16 MB) when --direct-order is set
DIRECT_L2 = 1e-6


def shapes(names, vocab=None, hidden=None, direct_order=0, direct_size=DIRECT_SIZE):
    """The named configurations, V and H replaced where given (a quick run's smaller model);
    the class ones get C = round(sqrt(V)) classes and the direct-connection settings."""
    override = {key: value for key, value in (("V", vocab), ("H", hidden)) if value is not None}
    configs = {}
    for name in names:
        cfg = {**CONFIGS[name], **override}
        if cfg.pop("classes", False):
            cfg.update(C=max(1, round(cfg["V"] ** 0.5)), direct_order=direct_order, D=direct_size)
        configs[name] = cfg
    return configs


def is_scoring(name):
    return name.startswith("C5")


def note(*args):
    print(*args, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------
# problem setup (same weights and data for every implementation)
# ----------------------------------------------------------------------------------

def make_problem(cfg, seed=SEED):
    """Flat float32 params (torch-like init) and a (T, B) batch of random tokens.

    Only t = 0 resets (h0 is then unused), which is what nn.RNN with a zero h0
    computes, so all three implementations see the same function. Everything is
    generated in float32 so that no float64 temporaries inflate the memory probe."""
    import numpy as np
    from rnnkit import layout

    V, H, B, T, C = cfg["V"], cfg["H"], cfg["B"], cfg["T"], cfg.get("C", 0)
    rng = np.random.default_rng(seed)
    params = np.empty(layout.layout_size(V, H, C), dtype=np.float32)
    views = layout.param_views(params, V, H, C)
    k = np.float32(1.0 / np.sqrt(H))
    views["W_xh"][...] = rng.standard_normal((V, H), dtype=np.float32) * np.float32(0.1)
    for name in ("W_hh", "b_h", "W_hy", "b_y") + (layout.CLASS_PARAM_NAMES if C else ()):
        views[name][...] = (rng.random(views[name].shape, dtype=np.float32) * 2 - 1) * k
    if C:       # text-like token frequencies, so that the class sizes are realistic
        zipf = zipf_weights(V)
        inputs = rng.choice(V, (T, B), p=zipf / zipf.sum()).astype(np.int32)
        targets = rng.choice(V, (T, B), p=zipf / zipf.sum()).astype(np.int32)
    else:
        inputs = rng.integers(0, V, (T, B), dtype=np.int32)
        targets = rng.integers(0, V, (T, B), dtype=np.int32)
    resets = np.zeros((T, B), dtype=np.int32)
    resets[0] = 1
    h0 = np.zeros((B, H), dtype=np.float32)
    return params, inputs, targets, resets, h0


def zipf_weights(V):
    """Unnormalised Zipf frequencies of word ids 0 .. V-1 (id order = frequency order)."""
    import numpy as np
    return 1.0 / np.arange(1, V + 1)


def class_args(cfg, seed=SEED):
    """The class map (RNNLM's binning of the Zipf frequencies) and direct connections of a
    class configuration, as keyword arguments of the class functions."""
    import numpy as np
    from rnnkit import layout
    order = cfg["direct_order"]
    table = np.random.default_rng(seed + 1).standard_normal(cfg["D"], dtype=np.float32) * np.float32(0.01)
    return dict(class_start=layout.frequency_classes(zipf_weights(cfg["V"]), cfg["C"]),
                table=table if order else None, direct_order=order)


def make_step(kind, impl, cfg):
    """The callable that times one training step (kind "train") or scores one sentence
    (kind "score") with implementation impl on cfg's problem."""
    problem = make_problem(cfg)
    if "C" in cfg:
        return CLASS_FUNCTIONS[kind][impl](*problem, cfg["V"], **class_args(cfg))
    return (TRAINERS if kind == "train" else SCORERS)[impl](*problem, cfg["V"])


def train_flops(cfg):
    return 6.0 * cfg["B"] * cfg["T"] * cfg["H"] * (cfg["H"] + cfg["V"])


def score_flops(cfg):
    return 2.0 * cfg["T"] * cfg["H"] * (cfg["H"] + cfg["V"])


# ----------------------------------------------------------------------------------
# one training step per implementation; each returns a callable doing one full step
# and, with capture=True, (loss, pre-clip grads by name, grad norm) for the check
# ----------------------------------------------------------------------------------

def c_trainer(params, inputs, targets, resets, h0, V):
    import numpy as np
    from rnnkit import kernel

    N = inputs.size
    grads = np.zeros_like(params)
    dh0 = np.zeros_like(h0)
    state = {"cache": None}

    def step(capture=False):
        grads.fill(0.0)
        dh0.fill(0.0)
        loss, logp, _, cache = kernel.forward(params, inputs, targets, resets, h0, V=V,
                                              keep_for_backward=True, reuse=state["cache"])
        state["cache"] = cache
        kernel.backward(grads, cache, loss_scale=1.0 / N, dh0=dh0)
        raw = grads.copy() if capture else None
        norm = kernel.clip_grad_norm(grads, MAX_NORM)
        kernel.sgd_update(params, grads, LR)
        return (loss / N, raw, norm, logp) if capture else None
    return step


def reference_trainer(params, inputs, targets, resets, h0, V):
    import numpy as np
    from rnnkit import reference

    N = inputs.size
    grads = np.zeros_like(params)

    def step(capture=False):
        grads.fill(0.0)
        loss, logp, _, cache = reference.forward(params, inputs, targets, resets, h0, V=V,
                                                 keep_for_backward=True)
        reference.backward(grads, cache, loss_scale=1.0 / N)
        raw = grads.copy() if capture else None
        norm = reference.clip_grad_norm(grads, MAX_NORM)
        reference.sgd_update(params, grads, LR)
        return (loss / N, raw, norm, logp) if capture else None
    return step


def torch_model(params, V, H):
    """nn.Embedding + nn.RNN(tanh) + nn.Linear whose weights are views of `params`
    (no copy: torch.from_numpy shares the buffer), W_ih = I and b_ih = 0."""
    import torch
    from rnnkit import layout

    p = {k: torch.from_numpy(v) for k, v in layout.param_views(params, V, H).items()}
    emb = torch.nn.Embedding(V, H)
    rnn = torch.nn.RNN(H, H, nonlinearity="tanh")
    lin = torch.nn.Linear(H, V)
    emb.weight = torch.nn.Parameter(p["W_xh"])
    rnn.weight_ih_l0 = torch.nn.Parameter(torch.eye(H))
    rnn.bias_ih_l0 = torch.nn.Parameter(torch.zeros(H))
    rnn.weight_hh_l0 = torch.nn.Parameter(p["W_hh"])
    rnn.bias_hh_l0 = torch.nn.Parameter(p["b_h"])
    rnn.flatten_parameters()
    lin.weight = torch.nn.Parameter(p["W_hy"])
    lin.bias = torch.nn.Parameter(p["b_y"])
    return emb, rnn, lin


def torch_trainer(params, inputs, targets, resets, h0, V):
    import torch
    import torch.nn.functional as F

    H = h0.shape[1]
    emb, rnn, lin = torch_model(params, V, H)
    modules = torch.nn.ModuleList([emb, rnn, lin])
    opt = torch.optim.SGD(modules.parameters(), lr=LR)
    x = torch.from_numpy(inputs).long()
    y = torch.from_numpy(targets).long().reshape(-1)
    h = torch.from_numpy(h0)[None]

    def step(capture=False):
        opt.zero_grad(set_to_none=True)
        out, _ = rnn(emb(x), h)                                  # (T, B, H)
        logits = lin(out).reshape(-1, V)                         # (T*B, V)
        loss = F.cross_entropy(logits, y, ignore_index=-1, reduction="mean")
        loss.backward()
        raw = None
        if capture:
            raw = {"W_xh": emb.weight.grad.numpy().copy(),
                   "W_hh": rnn.weight_hh_l0.grad.numpy().copy(),
                   "b_h": rnn.bias_hh_l0.grad.numpy().copy(),
                   "W_hy": lin.weight.grad.numpy().copy(),
                   "b_y": lin.bias.grad.numpy().copy()}
        norm = torch.nn.utils.clip_grad_norm_(modules.parameters(), MAX_NORM)
        opt.step()
        return (loss.item(), raw, float(norm), None) if capture else None
    return step


TRAINERS = {"c": c_trainer, "reference": reference_trainer, "torch": torch_trainer}


# ----------------------------------------------------------------------------------
# scoring one sentence (C5)
# ----------------------------------------------------------------------------------

def c_scorer(params, inputs, targets, resets, h0, V):
    from rnnkit import kernel
    state = {"cache": None}

    def score():
        loss, logp, _, cache = kernel.forward(params, inputs, targets, resets, h0, V=V,
                                              keep_for_backward=False, reuse=state["cache"])
        state["cache"] = cache
        return logp
    return score


def reference_scorer(params, inputs, targets, resets, h0, V):
    from rnnkit import reference

    def score():
        return reference.forward(params, inputs, targets, resets, h0, V=V,
                                 keep_for_backward=False)[1]
    return score


def torch_scorer(params, inputs, targets, resets, h0, V):
    import torch
    H = h0.shape[1]
    emb, rnn, lin = torch_model(params, V, H)
    x = torch.from_numpy(inputs).long()
    y = torch.from_numpy(targets).long()
    h = torch.from_numpy(h0)[None]

    def score():
        with torch.inference_mode():
            out, _ = rnn(emb(x), h)
            logp = torch.log_softmax(lin(out), dim=-1)
            return logp.gather(-1, y[..., None])[..., 0].numpy()
    return score


SCORERS = {"c": c_scorer, "reference": reference_scorer, "torch": torch_scorer}


# ----------------------------------------------------------------------------------
# the class-factored output (C1c, C4c, C5c): the C kernel and reference.py
# ----------------------------------------------------------------------------------

def class_trainer(module):
    """A training step of the class functions of rnnkit.<module> (kernel or reference):
    forward, backward with the direct table's sparse update, clip, SGD."""
    def make(params, inputs, targets, resets, h0, V, class_start, table, direct_order):
        import importlib
        import numpy as np
        impl = importlib.import_module(f"rnnkit.{module}")
        N = inputs.size
        grads = np.zeros_like(params)
        dh0 = np.zeros_like(h0)
        state = {"cache": None}

        def step(capture=False):
            grads.fill(0.0)
            dh0.fill(0.0)
            loss, logp, _, cache = impl.class_forward(
                params, inputs, targets, resets, h0, V=V, class_start=class_start, table=table,
                direct_order=direct_order, reuse=state["cache"])
            state["cache"] = cache
            impl.class_backward(grads, cache, table=table, loss_scale=1.0 / N, direct_lr=LR,
                                direct_l2=DIRECT_L2, dh0=dh0)
            raw = grads.copy() if capture else None
            norm = impl.clip_grad_norm(grads, MAX_NORM)
            impl.sgd_update(params, grads, LR)
            return (loss / N, raw, norm, logp) if capture else None
        return step
    return make


def class_scorer(module):
    def make(params, inputs, targets, resets, h0, V, class_start, table, direct_order):
        import importlib
        impl = importlib.import_module(f"rnnkit.{module}")
        state = {"cache": None}

        def score():
            _, logp, _, cache = impl.class_forward(
                params, inputs, targets, resets, h0, V=V, class_start=class_start, table=table,
                direct_order=direct_order, keep_for_backward=False, reuse=state["cache"])
            state["cache"] = cache
            return logp
        return score
    return make


CLASS_FUNCTIONS = {"train": {"c": class_trainer("kernel"), "reference": class_trainer("reference")},
                   "score": {"c": class_scorer("kernel"), "reference": class_scorer("reference")}}


# ----------------------------------------------------------------------------------
# verification (before timing)
# ----------------------------------------------------------------------------------

def rel_err(a, b):
    """max |a - b| / max |b|: relative to the array's scale, since the per-position
    gradients of a mean loss are tiny and absolute tolerances would say nothing."""
    import numpy as np
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, 1e-30)
    return float(np.max(np.abs(a - b))) / scale if a.size else 0.0


def verify_train(name, cfg, impls):
    """Run one step of each implementation from the same weights; compare with C."""
    from rnnkit import layout

    V, H, C = cfg["V"], cfg["H"], cfg.get("C", 0)
    results = {impl: make_step("train", impl, cfg)(capture=True) for impl in impls}
    c_loss, c_raw, c_norm, c_logp = results["c"]
    c_grads = layout.param_views(c_raw, V, H, C)
    report = []
    for impl in impls:
        if impl == "c":
            continue
        loss, raw, norm, logp = results[impl]
        grads = raw if isinstance(raw, dict) else layout.param_views(raw, V, H, C)
        errs = {"loss": rel_err(c_loss, loss)}
        if logp is not None:
            errs["logprobs"] = rel_err(c_logp, logp)
        if impl == "reference":     # torch's norm also covers W_ih, b_ih: not comparable
            errs["grad norm"] = rel_err(c_norm, norm)
        for pname in grads:
            errs["d" + pname] = rel_err(c_grads[pname], grads[pname])
        bad = {k: v for k, v in errs.items()
               if v > (1e-5 if k in ("loss", "logprobs", "grad norm") else 1e-4)}
        worst = max(errs, key=errs.get)
        report.append(f"C vs {impl}: worst {worst} {errs[worst]:.2e}")
        if bad:
            raise SystemExit(f"{name}: C kernel disagrees with {impl}: "
                             + ", ".join(f"{k} rel err {v:.2e}" for k, v in bad.items()))
    note(f"  {name} verified: " + "; ".join(report))


def verify_score(name, cfg, impls):
    import numpy as np
    outs = {impl: np.asarray(make_step("score", impl, cfg)(), np.float64) for impl in impls}
    report = []
    for impl in impls:
        if impl == "c":
            continue
        err = rel_err(outs["c"], outs[impl])
        report.append(f"C vs {impl}: logprobs rel err {err:.2e}")
        if err > 1e-5:
            raise SystemExit(f"{name}: C kernel scores disagree with {impl} (rel err {err:.2e})")
    note(f"  {name} verified: " + "; ".join(report))


# ----------------------------------------------------------------------------------
# timing
# ----------------------------------------------------------------------------------

def time_calls(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def blas_info():
    """Names of the BLAS libraries in play (kernel's OpenBLAS core, NumPy's, torch's)."""
    import ctypes
    import glob
    import numpy as np
    import scipy_openblas32

    info = {}
    try:
        lib = ctypes.CDLL(glob.glob(os.path.join(scipy_openblas32.get_lib_dir(), "*.so*"))[0])
        lib.scipy_openblas_get_config.restype = ctypes.c_char_p
        lib.scipy_openblas_get_corename.restype = ctypes.c_char_p
        info["kernel"] = (f"scipy-openblas32 {scipy_openblas32.__version__} "
                          f"({lib.scipy_openblas_get_corename().decode()})")
    except (OSError, IndexError, AttributeError):
        info["kernel"] = f"scipy-openblas32 {scipy_openblas32.__version__}"
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy"] = f"{cfg.get('name')} {cfg.get('version')}"
    except Exception:  # noqa: BLE001 - informational only
        info["numpy"] = "?"
    try:
        import torch
        conf = torch.__config__.show()
        blas = [ln.split("BLAS_INFO=")[1].split(",")[0] for ln in conf.splitlines() if "BLAS_INFO=" in ln]
        info["torch"] = f"torch {torch.__version__} ({blas[0] if blas else '?'})"
    except ImportError:
        pass
    return info


def sgemm_peak(threads, n, repeats=5):
    """Median GFLOP/s of an n^3 sgemm through each available BLAS; the max is 'peak'."""
    import ctypes
    import glob
    import numpy as np
    import scipy_openblas32

    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    flops = 2.0 * n ** 3
    out = {}
    lib = ctypes.CDLL(glob.glob(os.path.join(scipy_openblas32.get_lib_dir(), "*.so*"))[0])
    sgemm = lib.scipy_cblas_sgemm
    sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                                           ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
                                           ctypes.c_void_p, ctypes.c_int]
    args = (101, 111, 111, n, n, n, 1.0, a.ctypes.data, n, b.ctypes.data, n, 0.0, c.ctypes.data, n)
    # the kernel keeps this library on one thread and runs its own threads (rnn.c,
    # rnn_set_num_threads); the peak is OpenBLAS's own, on `threads` threads
    previous = lib.scipy_openblas_get_num_threads()
    lib.scipy_openblas_set_num_threads(threads)
    try:
        med, _ = time_calls(lambda: sgemm(*args), repeats)
    finally:
        lib.scipy_openblas_set_num_threads(previous)
        time.sleep(1.0)  # let OpenBLAS's woken pool stop spinning before anything is timed
    out["kernel OpenBLAS"] = flops / med / 1e9
    med, _ = time_calls(lambda: np.matmul(a, b, out=c), repeats)
    out["numpy"] = flops / med / 1e9
    try:
        import torch
        ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(c)
        med, _ = time_calls(lambda: torch.mm(ta, tb, out=tc), repeats)
        out["torch"] = flops / med / 1e9
    except ImportError:
        pass
    return out


class OtherLoad:
    """Cores used by other processes while a block runs: machine-wide busy time from
    /proc/stat minus this process tree's CPU time (the machine is shared)."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        self.busy0 = self._machine_busy()
        self.own0 = self._own()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        busy, own = self._machine_busy(), self._own()
        self.cores = None
        if busy is not None and wall > 0:
            self.cores = max(0.0, (busy - self.busy0 - (own - self.own0)) / wall)

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    @staticmethod
    def _machine_busy():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def have_torch():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        name = next(ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name"))
        flags = next(ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags"))
        isa = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
        return f"{name}, {os.cpu_count()} cpus, {isa}"
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------------
# peak memory of a C4 step (fresh subprocess per implementation)
# ----------------------------------------------------------------------------------

def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_probe(impl, cfg, threads):
    """Child: import everything, then reset the RSS high-water mark, build the model
    and run a few training steps. Prints {"peak_mb", "baseline_mb"}: peak is VmHWM
    above the RSS right after imports, i.e. weights + grads + all step buffers."""
    import numpy as np  # noqa: F401
    from rnnkit import kernel  # noqa: F401
    if impl == "torch":
        import torch
        torch.set_num_threads(threads)
    kernel.set_num_threads(threads)
    reset = True
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")        # 5 = reset the peak RSS (VmHWM) to the current RSS
    except OSError:
        reset = False
    baseline = _status_kb("VmRSS")
    step = make_step("train", impl, cfg)
    for _ in range(3):
        step()
    if reset:
        peak = _status_kb("VmHWM")
    else:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mb": (peak - baseline) / 1024, "baseline_mb": baseline / 1024,
                      "hwm_reset": reset}))


def run_memory_probe(impl, name, cfg, threads):
    env = dict(os.environ, **{k: str(threads) for k in THREAD_VARS})
    proc = subprocess.run([sys.executable, __file__, "--memory-probe", impl, "--config", name,
                           "--vocab", str(cfg["V"]), "--hidden", str(cfg["H"]),
                           "--direct-order", str(cfg.get("direct_order", 0)),
                           "--direct-size", str(cfg.get("D", DIRECT_SIZE)),
                           "--threads", str(threads)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        note(proc.stderr)
        raise SystemExit(f"memory probe for {impl} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------
# one thread count (runs in a child process)
# ----------------------------------------------------------------------------------

def worker(configs, threads, repeats, ref_repeats, score_repeats, skip_reference, peak_size):
    from rnnkit import kernel
    kernel.set_num_threads(threads)
    torch_ok = have_torch()
    if torch_ok:
        import torch
        torch.set_num_threads(threads)
    else:
        note("torch not installed: the PyTorch columns are left empty")
    try:
        import threadpoolctl
        threadpoolctl.threadpool_limits(threads)
    except ImportError:
        pass        # the child's *_NUM_THREADS variables already cap NumPy's BLAS
    impls = ["c"] + ([] if skip_reference else ["reference"]) + (["torch"] if torch_ok else [])

    note(f"[threads={threads}] sgemm peak ...")
    with OtherLoad() as load:
        peaks = sgemm_peak(threads, peak_size)
    note(f"  sgemm GFLOP/s {peaks} (other load {fmt(load.cores, '.2f')} cores)")
    peak = max(peaks.values())
    rows = []
    for name, cfg in configs.items():
        scoring = is_scoring(name)
        cfg_impls = [impl for impl in impls if impl != "torch" or "C" not in cfg]   # no torch twin
        (verify_score if scoring else verify_train)(name, cfg, cfg_impls)
        row = {"config": name, "threads": threads, **cfg, "peak_gflops": peak}
        units = 1 if scoring else cfg["B"] * cfg["T"]        # sentences or tokens per call
        flops = score_flops(cfg) if scoring else train_flops(cfg)
        for impl in cfg_impls:
            fn = make_step("score" if scoring else "train", impl, cfg)
            n = score_repeats if scoring else (ref_repeats if impl == "reference" else repeats)
            with OtherLoad() as load:
                med, best = time_calls(fn, n)
            row[f"{impl}_other_load_cores"] = load.cores
            row[f"{impl}_ms"] = med * 1e3
            row[f"{impl}_min_ms"] = best * 1e3
            row[f"{impl}_gflops"] = flops / med / 1e9
            row[f"{impl}_repeats"] = n
            row[f"{impl}_{'sentences' if scoring else 'tokens'}_per_s"] = units / med
            note(f"  {name} {impl:9s} median {med * 1e3:9.2f} ms  min {best * 1e3:9.2f} ms  (n={n}, "
                 f"other load {fmt(load.cores, '.2f')} cores)")
            del fn
            time.sleep(0.2)     # let the previous library's spinning threads go idle
        # scoring rows also carry *_tokens_per_s (20 tokens per sentence) for one schema
        if scoring:
            for impl in cfg_impls:
                row[f"{impl}_tokens_per_s"] = row[f"{impl}_sentences_per_s"] * cfg["T"]
        for impl in ("reference", "torch"):
            row.setdefault(f"{impl}_tokens_per_s", None)
            c, other = row["c_tokens_per_s"], row[f"{impl}_tokens_per_s"]
            row["ratio_vs_" + impl] = c / other if other else None
        row["c_peak_fraction"] = row["c_gflops"] / peak
        if name in ("C4", "C4c"):
            for impl in [impl for impl in cfg_impls if impl != "reference"]:
                mem = run_memory_probe(impl, name, cfg, threads)
                row[f"{impl}_step_peak_mb"] = mem["peak_mb"]
                note(f"  {name} {impl} step peak memory {mem['peak_mb']:.0f} MB above imports")
        rows.append(row)
    # Measure the peak again at the end and keep the better median per library: a
    # neighbour's burst during one measurement must not deflate the "% of peak".
    with OtherLoad() as load:
        again = sgemm_peak(threads, peak_size)
    note(f"  sgemm GFLOP/s again {again} (other load {fmt(load.cores, '.2f')} cores)")
    peaks = {k: max(v, again.get(k, 0.0)) for k, v in peaks.items()}
    peak = max(peaks.values())
    for row in rows:
        row["peak_gflops"] = peak
        row["c_peak_fraction"] = row["c_gflops"] / peak
    import numpy as np
    return {"threads": threads, "peak_size": peak_size, "peaks": peaks, "blas": blas_info(),
            "cpu": cpu_name(), "numpy": np.__version__, "rows": rows}


# ----------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------

def fmt(x, spec=",.0f"):
    return "-" if x is None else format(x, spec)


def class_label(row):
    """' (C=100)' or ' (C=100, direct 4/4194304)' for a class row, '' otherwise."""
    if "C" not in row:
        return ""
    direct = f", direct {row['direct_order']}/{row['D']}" if row["direct_order"] else ""
    return f" (C={row['C']}{direct})"


def twin_vs_torch(rows) -> None:
    """Give each class row (C1c ...) its speed over PyTorch's full softmax on the twin (C1 ...)."""
    torch_speed = {r["config"]: r.get("torch_sentences_per_s" if is_scoring(r["config"]) else "torch_tokens_per_s")
                   for r in rows}
    for r in rows:
        twin = torch_speed.get(r["config"].removesuffix("c"))
        if "C" in r and twin:
            key = "c_sentences_per_s" if is_scoring(r["config"]) else "c_tokens_per_s"
            r["ratio_vs_torch_twin"] = r[key] / twin


def torch_ratio(row) -> str:
    if "ratio_vs_torch_twin" in row:
        return f"{row['ratio_vs_torch_twin']:.2f}x\\*"
    return f"{fmt(row['ratio_vs_torch'], '.2f')}x"


def markdown(result):
    out = []
    peaks = result["peaks"]
    peak = max(peaks.values())
    out.append(f"## threads={result['threads']}")
    out.append("")
    out.append(f"- CPU: {result['cpu']}")
    out.append(f"- BLAS: kernel {result['blas'].get('kernel')}; numpy {result['blas'].get('numpy')}; "
               f"{result['blas'].get('torch', 'torch not installed')}")
    out.append(f"- sgemm {result['peak_size']}^3 GFLOP/s (median): "
               + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()) + f"; peak = {peak:.1f}")
    out.append("- train step = forward + CE (mean) over B*T + BPTT + clip 0.25 + SGD; "
               "C5 = score one 20-token sentence (forward only); tok/s for C5 is sentences/s")
    out.append("- other load = cores used by other processes while each implementation was timed "
               "(shared machine)")
    out.append("")
    out.append("| config | V | H | B | T | C ms (min) | C tok/s | ref tok/s | torch tok/s | C/torch | C/ref "
               "| C GFLOP/s | % peak | torch GFLOP/s | other load C / torch |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    twin_vs_torch(result["rows"])
    for r in result["rows"]:
        scoring = is_scoring(r["config"])
        unit = "sent/s" if scoring else ""
        key = "sentences_per_s" if scoring else "tokens_per_s"
        out.append(
            f"| {r['config']}{' (score)' if scoring else ''}{class_label(r)} | {r['V']} | {r['H']} | {r['B']} | {r['T']} "
            f"| {r['c_ms']:.2f} ({r['c_min_ms']:.2f}) "
            f"| {fmt(r.get('c_' + key))} {unit} | {fmt(r.get('reference_' + key))} "
            f"| {fmt(r.get('torch_' + key))} | {torch_ratio(r)} "
            f"| {fmt(r['ratio_vs_reference'], '.2f')}x | {r['c_gflops']:.1f} "
            f"| {100 * r['c_peak_fraction']:.0f}% | {fmt(r.get('torch_gflops'), '.1f')} "
            f"| {fmt(r.get('c_other_load_cores'), '.2f')} / {fmt(r.get('torch_other_load_cores'), '.2f')} |")
    if any("ratio_vs_torch_twin" in r for r in result["rows"]):
        out.append("")
        out.append("\\* class rows: C against PyTorch's full softmax of the twin configuration (C1c against "
                   "C1's torch, C4c against C4's, C5c against C5's), timed in the same run")
    mem = [r for r in result["rows"] if "c_step_peak_mb" in r]
    for r in mem:
        out.append("")
        out.append(f"{r['config']} training-step peak memory above the post-import RSS (weights + grads + step "
                   f"buffers, fresh process): C {r['c_step_peak_mb']:.0f} MB, "
                   f"torch {fmt(r.get('torch_step_peak_mb'))} MB")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--config", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS),
                    help="configurations to run")
    ap.add_argument("--threads", nargs="+", type=positive_int, default=[1, 2],
                    help="thread counts (each in its own child process)")
    ap.add_argument("--vocab", type=positive_int, help="V for every configuration (default: each one's own)")
    ap.add_argument("--hidden", type=positive_int, help="H for every configuration (default: each one's own)")
    ap.add_argument("--repeats", type=positive_int, default=10, help="timed training steps (C, torch)")
    ap.add_argument("--ref-repeats", type=positive_int, default=3, help="timed steps for reference.py")
    ap.add_argument("--score-repeats", type=positive_int, default=100, help="timed sentences for C5")
    ap.add_argument("--peak-size", type=positive_int, default=PEAK_SIZE,
                    help="n of the n^3 sgemm that measures the machine's peak")
    ap.add_argument("--direct-order", type=int, default=0, choices=range(0, 11), metavar="N",
                    help="direct connections of the class rows: n-gram order (0: none, at most 10)")
    ap.add_argument("--direct-size", type=positive_int, default=DIRECT_SIZE,
                    help="direct connections of the class rows: table entries")
    ap.add_argument("--skip-reference", action="store_true", help="do not time reference.py")
    ap.add_argument("--json", metavar="FILE", help="write the raw rows as JSON")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--memory-probe", choices=sorted(TRAINERS), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configs = shapes(args.config, args.vocab, args.hidden, args.direct_order, args.direct_size)

    if args.memory_probe:
        memory_probe(args.memory_probe, configs[args.config[0]], args.threads[0])
        return
    if args.worker:
        result = worker(configs, args.threads[0], args.repeats, args.ref_repeats,
                        args.score_repeats, args.skip_reference, args.peak_size)
        print(json.dumps(result))
        return

    results = []
    for threads in args.threads:
        env = dict(os.environ, **{k: str(threads) for k in THREAD_VARS})
        cmd = [sys.executable, __file__, "--worker", "--threads", str(threads),
               "--config", *args.config, "--repeats", str(args.repeats),
               "--ref-repeats", str(args.ref_repeats), "--score-repeats", str(args.score_repeats),
               "--peak-size", str(args.peak_size), "--direct-order", str(args.direct_order),
               "--direct-size", str(args.direct_size)]
        for option, value in (("--vocab", args.vocab), ("--hidden", args.hidden)):
            if value is not None:
                cmd += [option, str(value)]
        if args.skip_reference:
            cmd.append("--skip-reference")
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"benchmark worker for threads={threads} failed")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(result)
        print(markdown(result), flush=True)
        print()
    if args.json:
        rows = [row for result in results for row in result["rows"]]
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        note(f"wrote {len(rows)} rows to {args.json}")


if __name__ == "__main__":
    main()
