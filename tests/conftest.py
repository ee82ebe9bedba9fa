"""Shared fixtures for the ODIN test suite.

- `isa`: any test that asks for it runs once per instruction set this build AND this CPU
  can run (odin.native.available_isas()); the fixture switches the kernel table to it and
  restores the previous ISA afterwards, so tests never leak their ISA into each other.
- `rng`: a seeded numpy Generator (the seed differs per test but is fixed across runs).
- `isa_at_import`: the ISA that was current when the package was imported (so that the
  ODIN_ISA override can be checked after fixtures have switched ISAs around).
"""
from __future__ import annotations

import os
import signal
import sys
import zlib

import numpy as np
import pytest

# tests/ on the path so `import reference` works whatever pytest's import mode is
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import odin.native as native  # noqa: E402

# A runner started in the background (`pytest &`, as a CI job may be) inherits SIGINT ignored, and
# an ignored signal stays ignored across exec: every odin command the tests start would then
# shrug off Ctrl-C and the tests of what Ctrl-C does would hang. A user's shell starts commands
# with SIGINT at its default; so do the tests.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ISA_AT_IMPORT = native.current_isa()
AVAILABLE_ISAS = native.available_isas()


def pytest_generate_tests(metafunc):
    if "isa" in metafunc.fixturenames:
        metafunc.parametrize("isa", AVAILABLE_ISAS, indirect=True)


@pytest.fixture
def isa(request):
    name = getattr(request, "param", None) or native.current_isa()
    previous = native.current_isa()
    native.set_isa(name)
    assert native.current_isa() == name
    try:
        yield name
    finally:
        native.set_isa(previous)


@pytest.fixture
def rng(request):
    # stable per-test seed: same numbers on every run, different across tests
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def isa_at_import():
    return ISA_AT_IMPORT
