"""ODIN: a CPU training engine for small language models.

The hot loops are C (csrc/, compiled by cffi); this package drives them.
"""
__version__ = "0.1.0"
