"""No data races, no leaks, no undefined behaviour in the C library.

tools/sanitize.py builds csrc/ + tests/native/sanitize_main.c (no Python) with
-fsanitize=thread and with -fsanitize=address,undefined and runs a short training:
the kissing-spheres trainer on 2 threads while another thread reads snapshots and the
history and changes threads / pauses / resumes / stops, plus kernels and generation,
under every ISA the CPU runs. Any sanitizer report fails the test.

A test is skipped only when the toolchain itself cannot build and run a trivial
sanitized program (no libtsan / libasan); the reason is given. tests/native/racy.c
proves the tool really fails on a race, a leak, an overflow and UB.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

_TOOL = Path(__file__).resolve().parent.parent / "tools" / "sanitize.py"
_spec = importlib.util.spec_from_file_location("odin_sanitize_tool", _TOOL)
sanitize = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = sanitize  # dataclasses look the module up while the class is built
_spec.loader.exec_module(sanitize)


def _require(kind: str) -> None:
    reason = sanitize.unsupported_reason(kind)
    if reason:
        pytest.skip(f"-fsanitize={kind} unavailable: {reason}")


def _show(outcome) -> str:
    tail = outcome.output[-12000:]
    return f"{outcome.describe()}\n---- output (tail) ----\n{tail}"


@pytest.mark.parametrize("kind", sanitize.KINDS)
def test_library_training_is_clean_under_sanitizer(kind):
    _require(kind)
    outcome = sanitize.check_library(kind, timeout=240)
    assert outcome.ok, _show(outcome)
    assert not outcome.reports
    lines = outcome.output.splitlines()
    assert lines[-1] == "OK"
    assert any(line.startswith("isa scalar: ok") for line in lines)  # at least scalar ran


@pytest.mark.parametrize("kind", sanitize.KINDS)
def test_overflowing_shapes_are_clean_errors_under_sanitizer(kind):
    """Shapes whose tensor count, parameter count, workspace or cache size overflows int or
    size_t (GPT n_layer=357913942, RWKV n_layer=238609295, ...) and NaN sampler inputs,
    called on the C API directly: each a clean error, no heap overflow, no UB."""
    _require(kind)
    outcome = sanitize.check_overflow_shapes(kind, timeout=120)
    assert outcome.ok, _show(outcome)
    assert not outcome.reports
    assert "gpt n_layer=357913942: ok" in outcome.output
    assert "rwkv n_layer=238609295: ok" in outcome.output


@pytest.mark.parametrize(
    "kind, mode, what",
    [
        ("thread", "race", "ThreadSanitizer: data race"),
        ("address", "leak", "LeakSanitizer"),  # SUMMARY: AddressSanitizer: N byte(s) leaked
        ("address", "overflow", "heap-buffer-overflow"),
        ("address", "ub", "signed integer overflow"),
    ],
)
def test_tool_fails_on_a_deliberate_bug(kind, mode, what):
    """The same build-and-run path as the library check must fail on tests/native/racy.c."""
    _require(kind)
    outcome = sanitize.check_program(kind, [sanitize.RACY], (mode,), timeout=60)
    assert not outcome.ok, _show(outcome)
    assert outcome.returncode not in (0, None), _show(outcome)
    assert outcome.reports, _show(outcome)
    assert what in outcome.output, _show(outcome)


@pytest.mark.parametrize("kind", sanitize.KINDS)
def test_tool_passes_a_clean_program(kind):
    _require(kind)
    outcome = sanitize.check_program(kind, [sanitize.RACY], ("clean",), timeout=60)
    assert outcome.ok, _show(outcome)


def test_report_detection_without_exit_status():
    """A report is a failure even if the program managed to exit 0."""
    out = "x\nWARNING: ThreadSanitizer: data race (pid=1)\nSUMMARY: ThreadSanitizer: data race a.c:3 in f\n"
    assert sanitize.find_reports(out) == ["SUMMARY: ThreadSanitizer: data race a.c:3 in f"]
    assert sanitize.find_reports("a.c:1:2: runtime error: shift exponent 40 is too large\n")
    assert sanitize.find_reports("isa scalar: ok\nOK\n") == []


def test_aslr_mapping_failure_is_retried_under_setarch(tmp_path):
    """TSAN dies with "unexpected memory mapping" on kernels with high ASLR entropy; the
    tool reruns the program with ASLR off (setarch -R). A stand-in program fails that way
    unless ASLR is off for it."""
    if shutil.which("setarch") is None:
        pytest.skip("setarch (util-linux) not installed")
    fake = tmp_path / "fake_tsan"
    fake.write_text(
        "#!/bin/sh\n"
        "if grep -q '^...[4-7c-f]' /proc/self/personality; then echo 'ran without ASLR'; exit 0; fi\n"
        "echo 'FATAL: ThreadSanitizer: unexpected memory mapping 0x5555c0de0000-0x5555c0de1000'\n"
        "exit 66\n"
    )
    fake.chmod(0o755)
    rc, out, used_setarch = sanitize.run_exe("thread", fake, timeout=30)
    if rc != 0 and "Operation not permitted" in out:
        pytest.skip(f"personality(ADDR_NO_RANDOMIZE) is not allowed here: {out.strip()}")
    assert used_setarch and rc == 0, out
    assert "ran without ASLR" in out
