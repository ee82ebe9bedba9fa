"""Build script: the C library is compiled through cffi API mode (see odin/_build_ffi.py)."""
from setuptools import setup

setup(
    cffi_modules=["odin/_build_ffi.py:ffibuilder"],
)
