from setuptools import setup

# Everything else lives in pyproject.toml; this file only wires in the cffi build.
setup(cffi_modules=["rnnkit/_build_ffi.py:ffibuilder"], zip_safe=False)
