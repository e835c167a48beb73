"""Build script for the C kernel's two modules. Never imported at run time.

rnnkit._rnn_cffi: cffi, out-of-line API mode. setup.py names `ffibuilder` in
`cffi_modules`; `python rnnkit/_build_ffi.py` builds it in place for development. The
cdef is read from csrc/rnn.h itself (minus its preprocessor lines) so the header and the
binding cannot drift apart.

rnnkit._ngram_py: csrc/ngram_py.c, a CPython extension (setup.py's ext_modules, from
`ngram_py_extension()`) for the n-gram calls made once per word or sentence; it calls the
kernel's query functions through the table kernel.py hands it, so it links nothing else.
"""

import os
import sys
from pathlib import Path

import cffi
import scipy_openblas32

_HERE = Path(__file__).resolve().parent

CSRC = _HERE.parent / "csrc"


def header_cdef() -> str:
    lines = (CSRC / "rnn.h").read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def thread_args() -> list:
    # The kernel splits its softmax rows and optimizer loops over POSIX threads
    # (older glibc keeps them in libpthread); Windows builds run them on one thread.
    return [] if sys.platform == "win32" else ["-pthread"]


def sanitizer_args() -> list:
    """RNNKIT_SANITIZE=address builds the kernel with AddressSanitizer, for .ci/asan (which
    preloads libasan, since the Python running the tests is not instrumented)."""
    sanitizer = os.environ.get("RNNKIT_SANITIZE", "")
    if not sanitizer:
        return []
    if sanitizer != "address":
        raise SystemExit(f"RNNKIT_SANITIZE={sanitizer!r}: only 'address' is supported")
    return ["-fsanitize=address", "-fno-omit-frame-pointer", "-g"]


def compile_args() -> list:
    if sys.platform == "win32":
        return ["/O2"]
    # -O3 and nothing that relaxes IEEE semantics (no -ffast-math): the softmax needs it.
    # -fno-math-errno changes no result (the kernel never reads errno; sqrt is correctly
    # rounded as an instruction or a call) but lets GCC vectorise loops that call sqrtf:
    # Adam's pass over the weights ran 3x faster (GCC ignores it as a function attribute).
    return ["-O3", "-std=c99", "-fno-math-errno", "-Wall", "-Wextra"] + thread_args() + sanitizer_args()


def ngram_py_extension():
    """rnnkit._ngram_py, built with the kernel's flags (the sanitizer's too)."""
    from setuptools import Extension

    return Extension("rnnkit._ngram_py", sources=[os.path.relpath(CSRC / "ngram_py.c")], include_dirs=[str(CSRC)],
                     extra_compile_args=compile_args(), extra_link_args=sanitizer_args())


ffibuilder = cffi.FFI()
ffibuilder.cdef(header_cdef())
ffibuilder.set_source(
    "rnnkit._rnn_cffi",
    '#include "rnn.h"',
    # setuptools rejects absolute source paths; relative to the cwd it builds from.
    sources=[os.path.relpath(CSRC / name) for name in ("rnn.c", "ngram.c")],
    include_dirs=[str(CSRC), scipy_openblas32.get_include_dir()],
    library_dirs=[scipy_openblas32.get_lib_dir()],
    libraries=[scipy_openblas32.get_library()],
    extra_compile_args=compile_args(),
    extra_link_args=thread_args() + sanitizer_args(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
