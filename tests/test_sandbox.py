"""odin.data.sandbox: programs run in a limited subprocess; runaway ones are stopped, not trusted."""
import os
import tempfile

import pytest

from odin.data import sandbox

MODES = sandbox.ISOLATION_MODES


@pytest.mark.parametrize("isolation", MODES)
def test_normal_program_output_is_exact(isolation):
    result = sandbox.run("a=6\nb=a*7\nprint(b)\nprint('x', 'y', end='')", isolation=isolation)
    assert result.status == "ok" and result.ok
    assert result.stdout == "42\nx y"
    assert result.error == ""


@pytest.mark.parametrize("isolation", MODES)
def test_infinite_loop_is_killed_within_the_timeout(isolation):
    result = sandbox.run("n=0\nwhile True:\n n+=1", timeout=0.5, isolation=isolation)
    assert result.status == "timeout" and not result.ok
    assert result.stdout == ""
    # stopped by the program's own timer, not by the parent's backstop for a silent worker
    assert result.error == "no result within 0.5s"


def test_loop_inside_c_code_is_killed_by_the_cpu_limit():
    # sum(range(...)) never returns to the interpreter loop, so the timer cannot interrupt it;
    # RLIMIT_CPU kills the worker and the program is recorded as a timeout.
    result = sandbox.run("print(sum(range(10**13)))", timeout=0.5, isolation="exec")
    assert result.status == "timeout"
    assert "CPU" in result.error
    # a forked child is killed by the worker at its deadline first
    assert sandbox.run("print(sum(range(10**13)))", timeout=0.5, isolation="fork").status == "timeout"


@pytest.mark.parametrize("isolation", MODES)
def test_unbounded_allocation_hits_the_memory_limit(isolation):
    result = sandbox.run("x = 'a' * 10**10\nprint(len(x))", memory_mb=256, isolation=isolation)
    assert result.status == "memory"
    assert result.stdout == ""


def test_writing_a_file_fails_with_and_without_the_python_guards():
    directory = tempfile.mkdtemp(prefix="odin-sandbox-test-")
    try:
        os.chmod(directory, 0o777)  # writable even after the worker drops to nobody
        target = os.path.join(directory, "out.txt")
        program = f"f = open({target!r}, 'w')\nf.write('x' * 10)\nf.close()\nprint('wrote')"
        guarded = sandbox.run(program)
        assert guarded.status == "error" and "NameError" in guarded.error  # no open() at all
        assert not os.path.exists(target)
        # Without the Python guards the OS layers still hold: the host's folders are not even
        # visible from the private root, and RLIMIT_FSIZE=0 would refuse every byte anyway.
        for isolation in MODES:
            bare = sandbox.run(program, guards=False, isolation=isolation)
            assert bare.status == "error" and ("Error" in bare.error), bare
            assert not os.path.exists(target) or os.path.getsize(target) == 0
        inside = sandbox.run("f = open('x.txt', 'w')\nf.write('x' * 10)\nf.close()", guards=False)
        assert inside.status == "error"
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


@pytest.mark.parametrize("isolation", MODES)
@pytest.mark.parametrize("module", ["socket", "os", "subprocess"])
def test_imports_fail(isolation, module):
    result = sandbox.run(f"import {module}\nprint('imported')", isolation=isolation)
    assert result.status == "error"
    assert "ImportError" in result.error
    assert result.stdout == ""




def test_output_limit_and_exceptions():
    results = sandbox.run_many(["print('x' * 100000)", "print(1//0)", "print([][1])"], max_output=1000)
    assert [r.status for r in results] == ["output_limit", "error", "error"]
    assert results[1].error.startswith("ZeroDivisionError")
    assert results[2].error.startswith("IndexError")


def test_many_programs_keep_their_order_across_workers():
    programs = [f"print({i}*3)" for i in range(300)]
    results = sandbox.run_many(programs, jobs=2, batch_size=37)
    assert [r.stdout for r in results] == [f"{i * 3}\n" for i in range(300)]
    seen = []
    sandbox.run_many(programs[:50], batch_size=10, on_progress=seen.append)
    assert seen and seen[-1] == 50 and seen == sorted(seen)


def test_a_program_that_kills_its_worker_loses_only_itself():
    programs = ["print(1)", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "print(3)", "print(4)"]
    results = sandbox.run_many(programs, guards=False, batch_size=10)
    assert [r.status for r in results] == ["ok", "killed", "ok", "ok"]
    assert [r.stdout for r in results] == ["1\n", "", "3\n", "4\n"]


def test_programs_do_not_share_state():
    results = sandbox.run_many(["leak = 5\nprint(leak)", "print(leak)", "print(len = 3)"], batch_size=10)
    assert results[0].stdout == "5\n"
    assert results[1].status == "error" and "NameError" in results[1].error
    assert results[2].status == "error"


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="timeout"):
        sandbox.run("print(1)", timeout=0)
    with pytest.raises(ValueError, match="isolation"):
        sandbox.run("print(1)", isolation="thread")
    with pytest.raises(ValueError, match="program 1"):
        sandbox.run_many(["print(1)", 3])


@pytest.mark.parametrize("isolation", MODES)
def test_trace_writes_each_assignment_with_its_values_and_result(isolation):
    program = ("def h(x):\n y=x*2\n return y\nn=0-16\nd=n*6\nfor i in range(2):\n d+=i*5\n"
               "s='nb'[::-1]\nm=h(n)\nk=m--3\nprint(d)")
    result = sandbox.run(program, trace=True, isolation=isolation)
    assert result.ok and result.stdout == "-91\n"
    # int variables get their values written in (never inside the string 'nb'); the loop
    # variable is a plain change; h's local y is not a top-level variable; the print shows
    # its argument's value
    assert result.trace == ("n=0-16=-16", "d=-16*6=-96", "i=0", "d=-96+(0*5)=-96", "i=1", "d=-96+(1*5)=-91",
                            "s='nb'[::-1]=bn", "m=h(-16)=-32", "k=-32--3=-29", "print(-91)")
    assert sandbox.run(program, isolation=isolation).trace == ()  # only when asked for


@pytest.mark.parametrize("isolation", MODES)
def test_trace_writes_out_what_a_called_function_returned(isolation):
    program = ("def f(x):\n if x>9:\n  return x-9\n return x*3\ndef g(w):\n return w[::-1]+'x'\n"
               "c=f(200)\nd=f(2)\ns=g('ab')\nt=g(s)\nk=f(3)+1\nk+=f(1)\nn=len(s)\nn=f(n)+len(s)\nprint(k)")
    result = sandbox.run(program, trace=True, isolation=isolation)
    assert result.ok and result.stdout == "13\n"
    # the branch taken shows in the expression written out; str arguments are written as
    # literals; a call inside a larger expression, an augmented assignment and a builtin
    # keep the plain form
    assert result.trace == ("c=f(200)=200-9=191", "d=f(2)=2*3=6", "s=g('ab')='ab'[::-1]+'x'=bax",
                            "t=g(s)='bax'[::-1]+'x'=xabx", "k=f(3)+1=10", "k=10+f(1)=13", "n=len(s)=3", "n=f(3)+len(s)=12", "print(13)")


@pytest.mark.parametrize("isolation", MODES)
def test_a_runaway_trace_ends_as_output_limit_not_in_memory(isolation):
    result = sandbox.run("n=0\nwhile True:\n n+=1", trace=True, max_output=2000, isolation=isolation)
    # stopped by the trace size (output_limit), not by the timeout
    assert result.status == "output_limit" and "trace" in result.error and result.trace == ()
