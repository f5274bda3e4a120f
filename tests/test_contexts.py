"""Contexts, start methods and module-level functions: cproc against
multiprocessing (Python 3.11).

Tests that change process-wide state (set_start_method, set_executable,
set_forkserver_preload, log_to_stderr) run in a fresh interpreter (a script
in tmp_path, run with subprocess) and compare its output with the same
script under multiprocessing.  The others run here, once per implementation
and start method (ids ``multiprocessing-spawn``, ``cproc-fork``, ...; select
a side with ``-k multiprocessing`` or ``-k cproc``).
"""

import logging
import os
import sys

import multiprocessing
import pytest

from helpers.impls import (PROCESS_CLASS, START_METHODS, ProcImpl, impl_method_params,
    warm_up_start_methods)
from helpers.scripts import child_env, run_impl_script, stderr_outline

pytestmark = pytest.mark.timeout(60)

IMPLS = ["multiprocessing", "cproc"]


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    warm_up_start_methods()


@pytest.fixture(params=impl_method_params())
def impl(request):
    name, method = request.param
    return ProcImpl(name, method)


def describe(result):
    left = ", left processes running" if result.leftover else ""
    return (f"exit {result.returncode}{left}\n--- stdout:\n{result.stdout[-3000:]}\n"
            f"--- stderr:\n{result.stderr[-3000:]}")


def check_ran_cleanly(result):
    assert result.returncode == 0, describe(result)
    assert not result.leftover, "processes still running after the main process ended: " + describe(result)


_REFERENCE = {}


def run_with_reference(tmp_path, name, body, impl_name, method, **kwargs):
    """Run the script under impl_name and (cached) under multiprocessing."""
    result = run_impl_script(tmp_path, name, body, impl_name, method, **kwargs)
    key = (name, method)
    if impl_name == "multiprocessing":
        _REFERENCE[key] = result
    if key not in _REFERENCE:
        refdir = tmp_path / "reference"
        refdir.mkdir(exist_ok=True)
        _REFERENCE[key] = run_impl_script(refdir, name, body, "multiprocessing", method, **kwargs)
    return result, _REFERENCE[key]


# ==========================================================================
# module-level API


MODULE_FUNCTIONS = [
    "Process", "current_process", "parent_process", "active_children", "cpu_count",
    "get_context", "set_start_method", "get_start_method", "get_all_start_methods",
    "set_executable", "set_forkserver_preload", "freeze_support", "get_logger", "log_to_stderr",
]
CONTEXT_METHODS = [
    "Process", "current_process", "parent_process", "active_children", "cpu_count",
    "get_context", "get_start_method", "set_start_method", "set_executable",
    "set_forkserver_preload", "freeze_support", "get_logger", "log_to_stderr",
    "Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier",
    "Value", "Array", "RawValue", "RawArray",
]
EXCEPTIONS = ["ProcessError", "BufferTooShort", "TimeoutError", "AuthenticationError"]


@pytest.mark.parametrize("name", IMPLS)
def test_module_functions(name):
    m = ProcImpl(name, "fork").module
    missing = [f for f in MODULE_FUNCTIONS if not callable(getattr(m, f, None))]
    assert not missing, f"{name} lacks {missing}"
    conn = __import__(name + ".connection", fromlist=["wait"])
    assert callable(conn.wait)
    for exc in EXCEPTIONS:
        assert getattr(m, exc) is getattr(multiprocessing, exc)
    assert m.Process.__name__ == "Process"
    assert m.get_all_start_methods() == ["fork", "spawn", "forkserver"]
    assert m.cpu_count() == os.cpu_count()
    assert m.freeze_support() is None
    assert m.current_process().name == "MainProcess"
    assert m.parent_process() is None


@pytest.mark.parametrize("name", IMPLS)
def test_get_logger(name):
    m = ProcImpl(name, "fork").module
    logger = m.get_logger()
    assert isinstance(logger, logging.Logger)
    assert logger is m.get_logger()
    assert logger.name == multiprocessing.get_logger().name == "multiprocessing"


def test_context_objects(impl):
    m = impl.module
    ctx = impl.ctx
    assert ctx.get_start_method() == impl.method
    assert m.get_context(impl.method) is ctx, "one context object per start method"
    assert ctx.get_context() is ctx
    assert ctx.get_context(None) is ctx
    for other in START_METHODS:
        assert ctx.get_context(other) is m.get_context(other)
    assert ctx.Process.__name__ == PROCESS_CLASS[impl.method]
    missing = [f for f in CONTEXT_METHODS if not callable(getattr(ctx, f, None))]
    assert not missing, f"{impl} context lacks {missing}"
    for exc in EXCEPTIONS:
        assert getattr(ctx, exc) is getattr(multiprocessing, exc)
    assert ctx.cpu_count() == os.cpu_count()
    assert ctx.current_process() is m.current_process()
    assert ctx.parent_process() is None
    assert ctx.active_children() == []
    assert ctx.get_logger() is m.get_logger()
    with pytest.raises(ValueError, match="^cannot set start method of concrete context$"):
        ctx.set_start_method("fork")
    with pytest.raises(ValueError, match="^cannot find context for 'bogus'$"):
        ctx.get_context("bogus")
    with pytest.raises(ValueError, match="^cannot find context for 'bogus'$"):
        m.get_context("bogus")


OBJECTS_SCRIPT = r'''
import multiprocessing as stdlib_mp

def bump(event, value, array, lock):
    with lock:
        value.value += 1
        array[0] += 1
    event.set()

if __name__ == "__main__":
    if os.environ.get("TOUCH_STDLIB") == "1":
        # multiprocessing's own objects of the same ctypes first (another
        # library in the same program): registers its picklers
        stdlib_mp.Value("i", 0), stdlib_mp.Array("i", 2), stdlib_mp.Lock()
    event, value, array, lock = ctx.Event(), ctx.Value("i", 41), ctx.Array("i", [1, 2]), ctx.Lock()
    p = P(target=bump, args=(event, value, array, lock))
    p.start()
    p.join()
    print(p.exitcode, event.is_set(), value.value, list(array), flush=True)
'''


def test_context_hands_out_objects_for_its_children(impl, tmp_path):
    """Event, Value, Array, Lock from a context work in a child started by it."""
    result = run_impl_script(tmp_path, "objects", OBJECTS_SCRIPT, impl.name, impl.method)
    check_ran_cleanly(result)
    assert result.stdout == "0 True 42 [2, 2]\n", describe(result)
    assert stderr_outline(result.stderr) == [], describe(result)


MIXED_SCRIPT = r'''
def put(q, lock):
    with lock:
        q.put(m.current_process().name)

if __name__ == "__main__":
    q, lock = m.get_context("fork").Queue(), m.get_context("fork").Lock()
    p = ctx.Process(target=put, args=(q, lock), name="child")
    try:
        p.start()
    except RuntimeError as e:
        print("refused:", str(e).split(" is being shared")[0], flush=True)
    else:
        print(q.get(timeout=20), flush=True)
        p.join()
        print(p.exitcode, flush=True)
'''


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_fork_context_objects_go_to_any_child(method, tmp_path):
    """A deliberate difference (CPython's test_mixed_startmethod): cproc's
    objects live in shared memory that any child can attach, so a fork
    context's Queue and Lock work in a spawn or forkserver child;
    multiprocessing refuses to start the child."""
    if sys.version_info >= (3, 11):     # 3.9 and 3.10 start the child, whose get() then fails
        result = run_impl_script(tmp_path, "mixed", MIXED_SCRIPT, "multiprocessing", method)
        check_ran_cleanly(result)
        assert result.stdout == "refused: A SemLock created in a fork context\n", describe(result)
    result = run_impl_script(tmp_path, "mixed", MIXED_SCRIPT, "cproc", method)
    check_ran_cleanly(result)
    assert result.stdout == "child\n0\n", describe(result)


@pytest.mark.parametrize("case", impl_method_params(impls=("cproc",)))
def test_context_objects_after_stdlib_objects(case, tmp_path, monkeypatch):
    """The same, in a program that also made multiprocessing's own Value/Array/Lock."""
    name, method = case
    monkeypatch.setenv("TOUCH_STDLIB", "1")
    result = run_impl_script(tmp_path, "objects", OBJECTS_SCRIPT, name, method)
    check_ran_cleanly(result)
    assert result.stdout == "0 True 42 [2, 2]\n", describe(result)
    assert stderr_outline(result.stderr) == [], describe(result)


# ==========================================================================
# set_start_method / get_start_method / get_context, fresh interpreter


START_METHOD_SCRIPT = r'''
def attempt(label, fn):
    try:
        result = fn()
    except Exception as exc:
        print(label, "!!", type(exc).__name__, exc)
    else:
        print(label, "->", repr(result))

if __name__ == "__main__":
    attempt("get_start_method(allow_none=True)", lambda: m.get_start_method(allow_none=True))
    attempt("get_all_start_methods()", m.get_all_start_methods)
    attempt("get_context('bogus')", lambda: m.get_context("bogus"))
    attempt("set_start_method('bogus')", lambda: m.set_start_method("bogus"))
    attempt("get_start_method(allow_none=True)", lambda: m.get_start_method(allow_none=True))
    attempt("set_start_method('spawn')", lambda: m.set_start_method("spawn"))
    attempt("get_start_method()", m.get_start_method)
    attempt("get_context() is get_context('spawn')", lambda: m.get_context() is m.get_context("spawn"))
    attempt("set_start_method('fork')", lambda: m.set_start_method("fork"))
    attempt("set_start_method('spawn')", lambda: m.set_start_method("spawn"))
    attempt("set_start_method('fork', force=True)", lambda: m.set_start_method("fork", force=True))
    attempt("get_start_method()", m.get_start_method)
    attempt("set_start_method('bogus', force=True)", lambda: m.set_start_method("bogus", force=True))
    attempt("get_start_method()", m.get_start_method)
    attempt("set_start_method(None, force=True)", lambda: m.set_start_method(None, force=True))
    attempt("get_start_method(allow_none=True)", lambda: m.get_start_method(allow_none=True))
    attempt("get_context() is get_context('fork')", lambda: m.get_context() is m.get_context("fork"))
    attempt("get_start_method(allow_none=True)", lambda: m.get_start_method(allow_none=True))
    attempt("set_start_method('spawn')", lambda: m.set_start_method("spawn"))
    attempt("set_start_method(None, force=True)", lambda: m.set_start_method(None, force=True))
    attempt("get_start_method()", m.get_start_method)
    attempt("get_start_method(allow_none=True)", lambda: m.get_start_method(allow_none=True))
'''

START_METHOD_EXPECTED = [
    "get_start_method(allow_none=True) -> None",
    "get_all_start_methods() -> ['fork', 'spawn', 'forkserver']",
    "get_context('bogus') !! ValueError cannot find context for 'bogus'",
    "set_start_method('bogus') !! ValueError cannot find context for 'bogus'",
    "get_start_method(allow_none=True) -> None",
    "set_start_method('spawn') -> None",
    "get_start_method() -> 'spawn'",
    "get_context() is get_context('spawn') -> True",
    "set_start_method('fork') !! RuntimeError context has already been set",
    "set_start_method('spawn') !! RuntimeError context has already been set",
    "set_start_method('fork', force=True) -> None",
    "get_start_method() -> 'fork'",
    "set_start_method('bogus', force=True) !! ValueError cannot find context for 'bogus'",
    "get_start_method() -> 'fork'",
    "set_start_method(None, force=True) -> None",
    "get_start_method(allow_none=True) -> None",
    "get_context() is get_context('fork') -> True",
    "get_start_method(allow_none=True) -> 'fork'",
    "set_start_method('spawn') !! RuntimeError context has already been set",
    "set_start_method(None, force=True) -> None",
    "get_start_method() -> 'fork'",
    "get_start_method(allow_none=True) -> 'fork'",
]


@pytest.mark.parametrize("name", IMPLS)
def test_start_method_functions(name, tmp_path):
    result = run_impl_script(tmp_path, "start_methods", START_METHOD_SCRIPT, name, "fork")
    check_ran_cleanly(result)
    got = result.stdout.splitlines()
    wrong = [f"  line {i + 1}: got {g!r}\n           expected {e!r}"
             for i, (g, e) in enumerate(zip(got, START_METHOD_EXPECTED)) if g != e]
    assert not wrong and len(got) == len(START_METHOD_EXPECTED), "\n".join(wrong) + "\n" + describe(result)


SET_METHOD_SCRIPT = r'''
MARK = 0

def child(parent):
    cp = m.current_process()
    print("child", cp.name, "mark=%d" % MARK, "direct=%s" % (os.getppid() == parent), flush=True)

if __name__ == "__main__":
    m.set_start_method(METHOD)
    MARK = 1
    print("main", m.get_start_method(), flush=True)
    p = m.Process(target=child, args=(os.getpid(),))
    print("before", p.name, repr(p).split()[0], flush=True)
    p.start()
    p.join()
    print("after", p.exitcode, flush=True)
'''


@pytest.mark.parametrize("case", impl_method_params())
def test_set_start_method_applies_to_module_process(case, tmp_path):
    name, method = case
    result, ref = run_with_reference(tmp_path, "set_method", SET_METHOD_SCRIPT, name, method)
    mark, direct = {"fork": (1, True), "spawn": (0, True), "forkserver": (0, False)}[method]
    expected = [
        f"main {method}",
        "before Process-1 <Process",
        f"child Process-1 mark={mark} direct={direct}",
        "after 0",
    ]
    check_ran_cleanly(ref)
    assert ref.stdout.splitlines() == expected, describe(ref)
    check_ran_cleanly(result)
    assert result.stdout.splitlines() == expected, describe(result)
    assert stderr_outline(result.stderr) == [], describe(result)


CHILD_START_METHOD_SCRIPT = r'''
def child(conn):
    conn.send((m.get_start_method(allow_none=True), m.get_start_method()))
    conn.close()

def report(what, maker):
    r, w = maker.Pipe(duplex=False)
    p = maker.Process(target=child, args=(w,))
    p.start()
    w.close()
    print(what, "->", *r.recv(), flush=True)
    r.close()
    p.join()

if __name__ == "__main__":
    for method in m.get_all_start_methods():
        report("context " + method, m.get_context(method))
    for method in m.get_all_start_methods():
        m.set_start_method(method, force=True)
        report("default " + method, m)
        for other in m.get_all_start_methods():
            if other != method:
                report("default %s, context %s" % (method, other), m.get_context(other))
'''


@pytest.mark.parametrize("name", IMPLS)
def test_child_reports_its_start_method(name, tmp_path):
    """A child's get_start_method(): its Process's method (a context's), else
    the parent's default (set with set_start_method(..., force=True)), on
    every start method; on 3.9 too, where _bootstrap() does not call the
    Process's _after_fork()."""
    result, ref = run_with_reference(tmp_path, "child_method", CHILD_START_METHOD_SCRIPT, name, "fork")
    methods = list(START_METHODS)
    expected = [f"context {m} -> {m} {m}" for m in methods]
    for m in methods:
        expected.append(f"default {m} -> {m} {m}")
        expected += [f"default {m}, context {o} -> {o} {o}" for o in methods if o != m]
    for res in (ref, result):
        check_ran_cleanly(res)
        assert res.stdout.splitlines() == expected, describe(res)
        assert stderr_outline(res.stderr) == [], describe(res)


# ==========================================================================
# log_to_stderr


LOGGING_SCRIPT = r'''
import logging

def child():
    m.get_logger().warning("hello from child")

if __name__ == "__main__":
    logger = m.log_to_stderr(logging.INFO)
    print(logger.name, logger is m.get_logger(), logging.getLevelName(logger.level), flush=True)
    p = P(target=child)
    p.start()
    p.join()
    print("exit", p.exitcode, flush=True)
'''


def test_log_to_stderr(impl, tmp_path):
    result, ref = run_with_reference(tmp_path, "log_script", LOGGING_SCRIPT, impl.name, impl.method)
    cls = PROCESS_CLASS[impl.method]
    exit_lines = [f"[INFO/{cls}-1] process shutting down", f"[INFO/{cls}-1] process exiting with exitcode 0"]
    if sys.version_info >= (3, 13):
        # 3.13's _bootstrap no longer calls util._exit_function(): the child's
        # atexit handlers run it after _bootstrap has logged the exit code (gh-83856)
        exit_lines.reverse()
    child_lines = [
        f"[INFO/{cls}-1] child process calling self.run()",
        f"[WARNING/{cls}-1] hello from child",
        *exit_lines,
    ]
    for res in (ref, result):
        check_ran_cleanly(res)
        assert res.stdout.splitlines() == ["multiprocessing True INFO", "exit 0"], describe(res)
        lines = res.stderr.splitlines()
        assert [line for line in lines if f"/{cls}-1]" in line] == child_lines, describe(res)
        assert lines[-1] == "[INFO/MainProcess] process shutting down", describe(res)


# ==========================================================================
# set_executable, set_forkserver_preload


SET_EXECUTABLE_SCRIPT = r'''
def child():
    print("child ran", flush=True)

if __name__ == "__main__":
    m.set_executable(os.path.abspath("pywrap"))
    p = P(target=child)
    p.start()
    p.join()
    print("exit", p.exitcode, flush=True)
'''


@pytest.mark.parametrize("case", impl_method_params(methods=("spawn", "forkserver")))
def test_set_executable(case, tmp_path):
    name, method = case
    wrapper = tmp_path / "pywrap"
    log = tmp_path / "pywrap.log"
    wrapper.write_text(f'#!/bin/sh\necho "$$" >> "{log}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    result = run_impl_script(tmp_path, "set_executable", SET_EXECUTABLE_SCRIPT, name, method)
    check_ran_cleanly(result)
    assert result.stdout.splitlines() == ["child ran", "exit 0"], describe(result)
    assert log.exists() and log.read_text().strip(), "the executable set with set_executable() was not used"


PRELOAD_SCRIPT = r'''
def child():
    print("child", m.current_process().name, "preloaded=%s" % ("preloadmod" in sys.modules), flush=True)

if __name__ == "__main__":
    m.set_forkserver_preload(["preloadmod"])
    fs = m.get_context("forkserver")
    for i in range(2):
        p = fs.Process(target=child)
        p.start()
        p.join()
    print("main", os.getpid(), "preloaded=%s" % ("preloadmod" in sys.modules), flush=True)
'''


@pytest.mark.parametrize("name", IMPLS)
def test_set_forkserver_preload(name, tmp_path):
    log = tmp_path / "preload.pids"
    (tmp_path / "preloadmod.py").write_text(
        f"import os\nwith open({str(log)!r}, 'a') as f:\n    f.write('%d\\n' % os.getpid())\n")
    result = run_impl_script(tmp_path, "preload", PRELOAD_SCRIPT, name, "forkserver")
    check_ran_cleanly(result)
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "child ForkServerProcess-1 preloaded=True",
        "child ForkServerProcess-2 preloaded=True",
    ], describe(result)
    main_pid = int(lines[2].split()[1])
    assert lines[2].endswith("preloaded=False"), describe(result)
    pids = log.read_text().split() if log.exists() else []
    assert len(pids) == 1, f"preloadmod imported by {pids}: expected once, by the server"
    assert int(pids[0]) != main_pid


# --------------------------------------------------------------------------
# import cost: every spawned child imports cproc


def test_import_leaves_ctypes_and_connection_for_first_use():
    """``import cproc`` (what each spawn or forkserver child does first) loads
    neither ctypes nor cproc.connection (socket, multiprocessing.connection);
    both load on first use, and then behave as usual."""
    code = (
        "import sys, pickle, cproc\n"
        "print('ctypes' in sys.modules, 'cproc.connection' in sys.modules)\n"
        "a, b = cproc.Pipe()\n"
        "a.send('hi'); print(b.recv(), cproc.connection.Connection is type(a))\n"
        "v = cproc.RawValue('i', 7)\n"
        "w = pickle.loads(cproc.reduction.ForkingPickler.dumps(v))\n"
        "w.value = 9; print(v.value, 'ctypes' in sys.modules)\n"
    )
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=child_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["False False", "hi True", "9 True"]


def test_default_start_method_follows_the_python_version():
    """multiprocessing's Linux default: fork up to 3.13, forkserver from 3.14
    (the running Python's is differential in this file; the mapping is
    pinned here for the versions this machine cannot run)."""
    import cproc.context
    assert cproc.context._default_start_method((3, 13, 0)) == "fork"
    assert cproc.context._default_start_method((3, 14, 0)) == "forkserver"
    import multiprocessing
    assert cproc.get_context().get_start_method() == multiprocessing.get_context().get_start_method()
