import runpy

from setuptools import setup

# Everything else lives in pyproject.toml; this file only wires in the compiled modules
# (rnnkit/_build_ffi.py describes both).
build = runpy.run_path("rnnkit/_build_ffi.py")
setup(cffi_modules=["rnnkit/_build_ffi.py:ffibuilder"], ext_modules=[build["ngram_py_extension"]()], zip_safe=False)
