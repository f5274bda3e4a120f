"""Process: differential tests, cproc against multiprocessing (Python 3.11).

Every test runs once per implementation and start method (fixture ``impl``,
ids like ``multiprocessing-spawn`` / ``cproc-fork``; select a side with
``-k multiprocessing`` or ``-k cproc``).  The multiprocessing side uses
``multiprocessing.get_context(method)``, the cproc side
``cproc.get_context(method)``; both see the same scenario and the test
asserts what multiprocessing 3.11 shows the user.  Where a whole program's
output is compared (stdout ordering, stderr, names), the scenario is a script
run with ``subprocess`` and its output is compared with multiprocessing's
output for the same script and start method.

Notes on multiprocessing 3.11 that the expectations encode:

* ``get_context(m).Process`` is ``ForkProcess``/``SpawnProcess``/
  ``ForkServerProcess``: default names are ``ForkProcess-N`` etc. (only the
  module-level ``Process`` gives ``Process-N``); one counter is shared by all
  classes, and a child counts its own children ``NAME:1``, ``NAME:2``.
* Children report through JSON files (tests/helpers/targets.py), never through a
  Connection, so that a report does not depend on the pickling of handles.
"""

import gc
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time

import multiprocessing.connection
import pytest

import helpers.targets
from helpers.blocking import pid_gone, proc_state, wait_blocked, wait_until
from helpers.impls import ProcImpl, impl_method_params, pickle_error, warm_up_start_methods
from helpers.scripts import (SCRIPT_PRELUDE, kill_session, popen_impl_script, read_line, run_impl_script,
    stderr_outline)
from helpers.targets import (proc_args_report, proc_catch_sigint, proc_exit, proc_ignore_args,
    proc_ignore_sigterm, proc_misuse_foreign, proc_misuse_in_child, proc_nested, proc_noop, proc_report,
    proc_sleep, proc_touch_then_sleep, read_json)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    warm_up_start_methods()


@pytest.fixture(params=impl_method_params())
def impl(request):
    name, method = request.param
    return ProcImpl(name, method)


def _direct_child(pid):
    """True if pid is (still) a child of this process (fork/spawn, not forkserver)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return int(stat[stat.rindex(")") + 2:].split()[1]) == os.getpid()


def _cleanup(*procs):
    """Kill and join what a failed test left running (the leak check runs after)."""
    for p in procs:
        try:
            if p.exitcode is None:
                p.kill()
                p.join(5)
        except (ValueError, AttributeError, AssertionError):
            pass


# --------------------------------------------------------------------------
# script runs: the impl's output and multiprocessing's, for the same script

_REFERENCE = {}


def run_with_reference(tmp_path, name, body, impl, timeout=30.0):
    """Run the script under impl and (cached) under multiprocessing, same method."""
    result = run_impl_script(tmp_path, name, body, impl.name, impl.method, timeout=timeout)
    key = (name, impl.method)
    if impl.name == "multiprocessing":
        _REFERENCE[key] = result
    if key not in _REFERENCE:
        refdir = tmp_path / "reference"
        refdir.mkdir(exist_ok=True)
        _REFERENCE[key] = run_impl_script(refdir, name, body, "multiprocessing", impl.method, timeout=timeout)
    return result, _REFERENCE[key]


def describe(result):
    left = ", left processes running" if result.leftover else ""
    return (f"exit {result.returncode}{left}\n--- stdout:\n{result.stdout[-3000:]}\n"
            f"--- stderr:\n{result.stderr[-3000:]}")


def check_ran_cleanly(result, returncode=0):
    assert result.returncode == returncode, describe(result)
    assert not result.leftover, "processes still running after the main process ended: " + describe(result)


def check_both_print(ref, result, lines):
    """multiprocessing's run (ref) and the implementation's both ran cleanly,
    printed exactly `lines` and nothing to stderr."""
    for res in (ref, result):
        check_ran_cleanly(res)
        assert res.stdout.splitlines() == lines, describe(res)
        assert stderr_outline(res.stderr) == [], describe(res)


# ==========================================================================
# life cycle, attributes, start method actually used


def test_lifecycle_and_start_method(impl, tmp_path, monkeypatch):
    monkeypatch.setattr(helpers.targets, "MARK", 4242)  # a fork child sees it, others import afresh
    path = str(tmp_path / "report.json")
    p = impl.Process(target=proc_report, args=(path, impl.name))
    try:
        assert p.pid is None and p.ident is None and p.exitcode is None
        assert p.is_alive() is False
        assert p.daemon is False
        assert re.fullmatch(impl.process_class_name + r"-\d+", p.name), p.name
        with pytest.raises(ValueError, match="^process not started$"):
            p.sentinel
        p.start()
        assert isinstance(p.pid, int) and p.pid > 0
        assert p.ident == p.pid
        assert isinstance(p.sentinel, int)
        p.join(30)
        assert p.exitcode == 0
        assert p.is_alive() is False
        rep = read_json(path)
    finally:
        _cleanup(p)
    assert rep["pid"] == p.pid
    assert rep["name"] == p.name and rep["cp_pid"] == p.pid and rep["ident"] == p.pid
    assert rep["daemon"] is False
    # the start method that was asked for is the one used
    assert rep["start_method"] == impl.method
    if impl.method == "fork":
        assert (rep["ppid"], rep["mark"]) == (os.getpid(), 4242), "not a fork of this process"
    elif impl.method == "spawn":
        assert (rep["ppid"], rep["mark"]) == (os.getpid(), 0), "not a fresh interpreter started by this process"
    else:
        assert rep["ppid"] != os.getpid(), "a forkserver child is not a child of this process"
        assert rep["mark"] == 0
    p.close()


def test_parent_process_and_current_process(impl, tmp_path):
    m = impl.module
    assert m.parent_process() is None
    assert m.current_process().name == "MainProcess"
    assert repr(m.current_process()) == "<_MainProcess name='MainProcess' parent=None started>"
    path = str(tmp_path / "report.json")
    p = impl.Process(target=proc_report, args=(path, impl.name), daemon=True)
    try:
        p.start()
        p.join(30)
        rep = read_json(path)
    finally:
        _cleanup(p)
    assert p.exitcode == 0
    assert rep["parent"] == {"name": "MainProcess", "pid": os.getpid(), "alive": True, "daemon": False}
    assert rep["parent_repr"] == "<_ParentProcess name='MainProcess' parent=None unknown>"
    current = rep["current_repr"].replace(p.name, "<name>").replace(f"parent={os.getpid()}", "parent=<me>")
    assert current == f"<{impl.process_class_name} name='<name>' parent=<me> started daemon>"
    assert rep["daemon"] is True
    p.close()


def test_nested_names_and_grandchild_parent(impl, tmp_path):
    path = str(tmp_path / "nested.json")
    p = impl.Process(target=proc_nested, args=(path, impl.name, impl.method))
    try:
        p.start()
        p.join(30)
        rep = read_json(path)
    finally:
        _cleanup(p)
    assert p.exitcode == 0
    assert "error" not in rep, rep.get("error")
    assert rep["name"] == p.name
    assert rep["grandchild_name_before_start"] == p.name + ":1"
    assert rep["grandchild_exitcode"] == 0
    gc = rep["grandchild"]
    assert gc["name"] == p.name + ":1"
    assert gc["parent"]["name"] == p.name
    assert gc["parent"]["pid"] == p.pid
    assert rep["active_after_join"] == []
    p.close()


def test_authkey(impl, tmp_path):
    m = impl.module
    inherited = str(tmp_path / "inherited.json")
    custom = str(tmp_path / "custom.json")
    p1 = impl.Process(target=proc_report, args=(inherited, impl.name))
    p2 = impl.Process(target=proc_report, args=(custom, impl.name))
    assert bytes(p1.authkey) == bytes(m.current_process().authkey)
    assert isinstance(p1.authkey, bytes) and len(p1.authkey) == 32
    p2.authkey = b"secret-key"
    assert isinstance(p2.authkey, bytes) and bytes(p2.authkey) == b"secret-key"
    with pytest.raises(TypeError, match="Pickling an AuthenticationString object is disallowed"):
        pickle.dumps(p1.authkey)
    try:
        p1.start()
        p2.start()
        p1.join(30)
        p2.join(30)
        assert (p1.exitcode, p2.exitcode) == (0, 0)
        assert read_json(inherited)["authkey"] == bytes(m.current_process().authkey).hex()
        assert read_json(custom)["authkey"] == b"secret-key".hex()
    finally:
        _cleanup(p1, p2)
    p1.close()
    p2.close()


def test_args_kwargs_positional_form_and_run(impl, tmp_path):
    # run() called directly runs the target here, in this process
    direct = str(tmp_path / "direct.json")
    p = impl.Process(target=proc_args_report, args=[direct, 1, "a"], kwargs={"k": [2]})
    p.run()
    assert read_json(direct) == {"args": [1, "a"], "kwargs": {"k": [2]}}
    assert p.pid is None and p.exitcode is None
    # positional (group, target, name, args, kwargs); kwargs copied at construction
    pos = str(tmp_path / "pos.json")
    kw = {"k": 3}
    q = impl.Process(None, proc_args_report, "positional", (pos, "x"), kw)
    kw["k"] = 4
    assert q.name == "positional"
    try:
        q.start()
        q.join(30)
    finally:
        _cleanup(q)
    assert q.exitcode == 0
    assert read_json(pos) == {"args": ["x"], "kwargs": {"k": 3}}
    q.close()
    # daemon is keyword-only
    with pytest.raises(TypeError):
        impl.Process(None, proc_noop, "n", (), {}, True)
    assert impl.Process(target=proc_noop, daemon=True).daemon is True


def test_unpicklable_target_or_args(impl, monkeypatch):
    """spawn and forkserver pickle the Process: the error comes from start(), in
    the parent, and leaves a Process that was never started; fork pickles nothing.
    cproc falls back to cloudpickle, so a local target starts (test_any_callable.py);
    what cloudpickle cannot pickle either (a lock) fails as in multiprocessing."""
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook",
                        lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value} ({u.object!r})"))
    local = lambda: None  # noqa: E731 - a local object on purpose
    cases = [
        ("local target", dict(target=local),
         (pickle_error(local)[0].__name__, pickle_error(local)[1])),
        ("lock argument", dict(target=proc_ignore_args, args=(threading.Lock(),)),
         ("TypeError", "cannot pickle '_thread.lock' object")),
    ]
    for label, kwargs, error in cases:
        p = impl.Process(**kwargs)
        try:
            outcome = _outcome(p.start)
            if impl.method == "fork" or (impl.name == "cproc" and label == "local target"):
                assert outcome == ("ok", None), label
                p.join(30)
                assert p.exitcode == 0, label
            else:
                assert outcome == error, label
                assert p.pid is None and p.exitcode is None and p.is_alive() is False, label
                assert repr(p).endswith(" initial>"), repr(p)
        finally:
            _cleanup(p)
        p.close()
        del p
        gc.collect()
    assert unraisable == [], "exceptions ignored in __del__ and the like:\n" + "\n".join(unraisable)


def test_target_module_missing_in_child(impl, monkeypatch):
    """A target whose module exists only in the parent: a fork child has it, a
    spawn or forkserver child cannot unpickle it and ends with exit code 1."""
    import types

    ghost = types.ModuleType("ghost_module_of_test_process")
    exec("def target():\n    pass\n", ghost.__dict__)
    monkeypatch.setitem(sys.modules, ghost.__name__, ghost)
    p = impl.Process(target=ghost.target)
    try:
        p.start()
        p.join(30)
        assert p.exitcode == (0 if impl.method == "fork" else 1)
    finally:
        _cleanup(p)
    p.close()


# ==========================================================================
# exit codes


EXIT_PATHS = {
    "return": 0,
    "return_value": 0,
    "raise": 1,
    "keyboardinterrupt": 1,
    "exit_none": 0,
    "exit_0": 0,
    "exit_3": 3,
    "exit_300": 44,
    "exit_minus_1": 255,
    "exit_true": 1,
    "exit_msg": 1,
    "os_exit_7": 7,
    "sigusr1": -signal.SIGUSR1,
    "sigkill_self": -signal.SIGKILL,
}


def test_exit_codes(impl):
    procs = {how: impl.Process(target=proc_exit, args=(how,)) for how in EXIT_PATHS}
    try:
        for p in procs.values():
            p.start()
        for p in procs.values():
            p.join(30)
        got = {how: p.exitcode for how, p in procs.items()}
        assert got == EXIT_PATHS
        r = repr(procs["sigusr1"])
        assert r.endswith(" stopped exitcode=-SIGUSR1>"), r
        r = repr(procs["exit_3"])
        assert r.endswith(" stopped exitcode=3>"), r
    finally:
        _cleanup(*procs.values())
    for p in procs.values():
        p.close()


STDERR_SCRIPT = r'''
def fail():
    raise ValueError("boom")

def interrupted():
    raise KeyboardInterrupt

def message():
    sys.exit("fatal: bad thing")

def quiet_exit():
    sys.exit(3)

def normal():
    print("to stderr", file=sys.stderr)

if __name__ == "__main__":
    for target in (fail, interrupted, message, quiet_exit, normal):
        p = P(target=target)
        print("=== " + target.__name__, file=sys.stderr, flush=True)
        p.start()
        p.join()
        print("--- %s %s" % (target.__name__, p.exitcode), file=sys.stderr, flush=True)
'''


def test_stderr_of_each_exit_path(impl, tmp_path):
    result, ref = run_with_reference(tmp_path, "stderr_paths", STDERR_SCRIPT, impl)
    cls = impl.process_class_name
    expected = [
        "=== fail",
        f"Process {cls}-1:",
        "Traceback (most recent call last):",
        "ValueError: boom",
        "--- fail 1",
        "=== interrupted",
        f"Process {cls}-2:",
        "Traceback (most recent call last):",
        "KeyboardInterrupt",
        "--- interrupted 1",
        "=== message",
        "fatal: bad thing",
        "--- message 1",
        "=== quiet_exit",
        "--- quiet_exit 3",
        "=== normal",
        "to stderr",
        "--- normal 0",
    ]
    check_ran_cleanly(result)
    assert result.stdout == ""
    assert stderr_outline(result.stderr) == expected, describe(result)
    assert stderr_outline(ref.stderr) == expected, describe(ref)
    # the traceback shows the user's function
    assert re.search(r'File ".*stderr_paths\.py", line \d+, in fail\n', result.stderr), result.stderr


# ==========================================================================
# output: flushed before start and at child exit, nothing lost or doubled


OUTPUT_SCRIPT = r'''
def many(n):
    for i in range(n):
        print("child %d" % i)
    print("child err", file=sys.stderr)

def tail_then_exit():
    for i in range(100):
        print("second %d" % i)
    sys.stdout.write("tail")
    sys.exit(2)

def lines_then_raise():
    for i in range(10):
        print("third %d" % i)
    raise RuntimeError("third failed")

if __name__ == "__main__":
    print("parent before start")
    print("parent err before start", file=sys.stderr)
    sys.stderr.write("partial ")  # stderr is line-buffered: this waits in the buffer
    p1 = P(target=many, args=(2000,))
    p1.start()
    print("parent after start")
    p1.join()
    p2 = P(target=tail_then_exit)
    p2.start()
    p2.join()
    p3 = P(target=lines_then_raise)
    p3.start()
    p3.join()
    print("parent after joins", p1.exitcode, p2.exitcode, p3.exitcode)
    print("parent err after joins", file=sys.stderr)
'''


def test_output_flushed_in_order(impl, tmp_path):
    result, ref = run_with_reference(tmp_path, "output_order", OUTPUT_SCRIPT, impl)
    expected = (
        "parent before start\n"
        + "".join("child %d\n" % i for i in range(2000))
        + "parent after start\n"
        + "".join("second %d\n" % i for i in range(100))
        + "tail"
        + "".join("third %d\n" % i for i in range(10))
        + "parent after joins 0 2 1\n"
    )
    check_ran_cleanly(result)
    assert ref.stdout == expected, "reference differs: " + describe(ref)
    if result.stdout != expected:
        got, exp = result.stdout.splitlines(), expected.splitlines()
        i = next((k for k in range(min(len(got), len(exp))) if got[k] != exp[k]), min(len(got), len(exp)))
        pytest.fail(f"stdout differs at line {i + 1} ({len(got)} lines, expected {len(exp)}): "
                    f"got {got[i:i + 3]!r}, expected {exp[i:i + 3]!r}")
    cls = impl.process_class_name
    assert stderr_outline(result.stderr) == [
        "parent err before start",
        "partial child err",
        f"Process {cls}-3:",
        "Traceback (most recent call last):",
        "RuntimeError: third failed",
        "parent err after joins",
    ], describe(result)


MAIN_IMPORT_SCRIPT = r'''
print("module level", __name__, flush=True)

def child():
    print("child", m.current_process().name, flush=True)

if __name__ == "__main__":
    for i in range(2):
        p = P(target=child)
        p.start()
        p.join()
    print("done", flush=True)
'''


def test_main_module_seen_by_children(impl, tmp_path):
    """What the main script's module-level code does in the children (spawn and
    forkserver children import it as __mp_main__) shows in the output."""
    result, ref = run_with_reference(tmp_path, "main_import", MAIN_IMPORT_SCRIPT, impl)
    check_ran_cleanly(result)
    check_ran_cleanly(ref)
    if impl.name == "cproc" and impl.method == "forkserver":
        # A deliberate difference: cproc's server imports __main__ once, as
        # set_forkserver_preload() documents; Python 3.11's server never does
        # (key mismatch), so each of its children re-imports the script.
        assert result.stdout.splitlines() == [
            "module level __main__", "module level __mp_main__",
            "child ForkServerProcess-1", "child ForkServerProcess-2", "done"], describe(result)
    else:
        assert result.stdout.splitlines() == ref.stdout.splitlines(), (
            f"got:\n{result.stdout}\nmultiprocessing:\n{ref.stdout}")
    assert bool(result.stderr.strip()) == bool(ref.stderr.strip()), describe(result)


# ==========================================================================
# names and subclasses (fresh interpreter: the counter starts at 1)


NAMES_SCRIPT = r'''
class Worker(P):
    def __init__(self, label):
        P.__init__(self)
        self.label = label

    def run(self):
        print("worker run", self.label, self.name, m.current_process().name, self.pid == os.getpid())


class Named(P):
    def __init__(self):
        super().__init__(name="custom-name")

    def run(self):
        print("named run", self.name, m.current_process().name)


def show(*args, **kwargs):
    print("show", args, sorted(kwargs.items()), m.current_process().name, m.parent_process() and m.parent_process().name)


def nest(depth, siblings):
    print("nest", m.current_process().name, m.parent_process().name)
    for i in range(siblings if depth else 0):
        q = P(target=nest, args=(depth - 1, 1))
        q.start()
        q.join()


def norm(s):
    return s.replace("pid=%d" % os.getpid(), "pid=<me>").replace("parent=%d" % os.getpid(), "parent=<me>")


if __name__ == "__main__":
    a = P()
    b = P(name="explicit")
    c = P()
    print("names", a.name, b.name, c.name)
    w = Worker("w1")
    print("worker", w.name, w.label, w.daemon, norm(repr(w)))
    w.start()
    w.join()
    print("worker exit", w.exitcode)
    n = Named()
    print("named", n.name)
    n.start()
    n.join()
    pos = P(None, show, "positional", (1, "two"), {"k": 3})
    pos.start()
    pos.join()
    print("pos", pos.name, pos.exitcode)
    kw = P(target=show, args=[4], kwargs={"x": 5}, daemon=True)
    print(norm(repr(kw)))
    kw.start()
    kw.join()
    print("kw", kw.name, kw.daemon, kw.exitcode)
    P(target=show, args=("direct",)).run()
    top = P(target=nest, args=(2, 2))
    top.start()
    top.join()
    print("top", top.name, top.exitcode, m.active_children())
'''


def test_names_subclasses_and_nesting(impl, tmp_path):
    result, ref = run_with_reference(tmp_path, "names", NAMES_SCRIPT, impl)
    cls = impl.process_class_name
    check_ran_cleanly(ref)
    ref_lines = ref.stdout.splitlines()
    # what multiprocessing shows (a check of the reference itself)
    assert ref_lines[0] == f"names {cls}-1 explicit {cls}-3"
    assert ref_lines[1] == "worker Worker-4 w1 False <Worker name='Worker-4' parent=<me> initial>"
    assert ref_lines[2] == "worker run w1 Worker-4 Worker-4 True"
    assert f"nest {cls}-9:1:1 {cls}-9:1" in ref_lines
    check_ran_cleanly(result)
    assert result.stdout.splitlines() == ref_lines, f"got:\n{result.stdout}\nmultiprocessing:\n{ref.stdout}"
    assert stderr_outline(result.stderr) == stderr_outline(ref.stderr) == []


DEFAULT_NAMES_SCRIPT = r'''
def nest(depth):
    print(m.current_process().name, repr(m.current_process()).split()[0])
    if depth:
        q = m.Process(target=nest, args=(depth - 1,))
        q.start()
        q.join()

if __name__ == "__main__":
    p = m.Process(target=nest, args=(2,))
    print(p.name, repr(p).split()[0])
    p.start()
    p.join()
    q = m.Process(target=nest, args=(0,))
    q.start()
    q.join()
'''


@pytest.mark.parametrize("name", ["multiprocessing", "cproc"])
def test_module_level_process_default_names(name, tmp_path):
    """The module-level Process (default context) is named Process-N, Process-N:M."""
    result = run_impl_script(tmp_path, "default_names", DEFAULT_NAMES_SCRIPT, name, "fork")
    check_ran_cleanly(result)
    assert result.stdout.splitlines() == [
        "Process-1 <Process",
        "Process-1 <Process",
        "Process-1:1 <Process",
        "Process-1:1:1 <Process",
        "Process-2 <Process",
    ], describe(result)


# ==========================================================================
# reprs


def test_reprs(impl, tmp_path):
    me = os.getpid()
    cls = impl.process_class_name
    path = str(tmp_path / "running.json")

    def norm(p):
        r = repr(p).replace(f"name={p.name!r}", "name=<name>").replace(f"parent={me}", "parent=<me>")
        try:
            pid = p.pid
        except ValueError:
            pid = None
        return r.replace(f"pid={pid}", "pid=<pid>") if pid else r

    p = impl.Process(target=proc_touch_then_sleep, args=(path, 30), daemon=True)
    q = impl.Process(target=proc_noop)
    try:
        got = [norm(p)]
        p.start()
        read_json(path)
        got.append(norm(p))
        p.terminate()
        p.join(10)
        got.append(norm(p))
        p.close()
        got.append(norm(p))
        q.start()
        q.join(30)
        got.append(norm(q))
    finally:
        _cleanup(p, q)
    q.close()
    assert got == [
        f"<{cls} name=<name> parent=<me> initial daemon>",
        f"<{cls} name=<name> pid=<pid> parent=<me> started daemon>",
        f"<{cls} name=<name> pid=<pid> parent=<me> stopped exitcode=-SIGTERM daemon>",
        f"<{cls} name=<name> parent=<me> closed daemon>",
        f"<{cls} name=<name> pid=<pid> parent=<me> stopped exitcode=0>",
    ]
    # a subclass and the module-level class
    Worker = type("Worker", (impl.Process,), {})
    w = Worker()
    assert re.fullmatch(r"Worker-\d+", w.name), w.name
    assert norm(w) == "<Worker name=<name> parent=<me> initial>"
    d = impl.module.Process(name="plain")
    assert norm(d) == "<Process name=<name> parent=<me> initial>"
    assert d.name == "plain"


# ==========================================================================
# misuse


def _outcome(fn):
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 - compared below
        return (type(exc).__name__, str(exc))


CLOSED = ("ValueError", "process object is closed")
STILL_RUNNING = ("ValueError", "Cannot close a process while it is still running. "
                 "You should first call join() or terminate().")
# name -> expected (type, message); a message of None: only the type is compared
MISUSE_EXPECTED = {
    "join before start": ("AssertionError", "can only join a started process"),
    "is_alive before start": ("ok", False),
    "sentinel before start": ("ValueError", "process not started"),
    "terminate before start": ("AttributeError", None),
    "kill before start": ("AttributeError", None),
    "close before start": ("ok", None),
    "join main process": ("AssertionError", "can only join a child process"),
    "group not None": ("AssertionError", "group argument must be None for now"),
    "name not a str": ("AssertionError", "name must be a string"),
    "args not iterable": ("TypeError", None),
    "start twice": ("AssertionError", "cannot start a process twice"),
    "close while running": STILL_RUNNING,
    "set daemon after start": ("AssertionError", "process has already started"),
    "run after start": ("AttributeError", None),
    "join(0) while running": ("ok", None),
    "join after exit": ("ok", None),
    "terminate after exit": ("ok", None),
    "kill after exit": ("ok", None),
    "close": ("ok", None),
    "close again": ("ok", None),
    "join after close": CLOSED,
    "start after close": CLOSED,
    "is_alive after close": CLOSED,
    "terminate after close": CLOSED,
    "kill after close": CLOSED,
    "pid after close": CLOSED,
    "ident after close": CLOSED,
    "exitcode after close": CLOSED,
    "sentinel after close": CLOSED,
    "name after close": ("ok", "kept"),
    "daemon after close": ("ok", False),
}


def test_misuse_errors(impl, tmp_path):
    m = impl.module
    path = str(tmp_path / "running.json")
    got = {}
    fresh = impl.Process(target=proc_noop)
    got["join before start"] = _outcome(fresh.join)
    got["is_alive before start"] = _outcome(fresh.is_alive)
    got["sentinel before start"] = _outcome(lambda: fresh.sentinel)
    got["terminate before start"] = _outcome(fresh.terminate)
    got["kill before start"] = _outcome(fresh.kill)
    got["close before start"] = _outcome(impl.Process(target=proc_noop).close)
    got["join main process"] = _outcome(m.current_process().join)
    got["group not None"] = _outcome(lambda: impl.Process(group=1, target=proc_noop))
    got["name not a str"] = _outcome(lambda: setattr(fresh, "name", 1))
    got["args not iterable"] = _outcome(lambda: impl.Process(target=proc_noop, args=1))
    p = impl.Process(target=proc_touch_then_sleep, args=(path, 30), name="kept")
    try:
        p.start()
        read_json(path)
        got["start twice"] = _outcome(p.start)
        got["close while running"] = _outcome(p.close)
        got["set daemon after start"] = _outcome(lambda: setattr(p, "daemon", True))
        got["run after start"] = _outcome(p.run)
        got["join(0) while running"] = _outcome(lambda: p.join(0))
        p.terminate()
        p.join(10)
        got["join after exit"] = _outcome(lambda: p.join(1))
        got["terminate after exit"] = _outcome(p.terminate)
        got["kill after exit"] = _outcome(p.kill)
        got["close"] = _outcome(p.close)
        got["close again"] = _outcome(p.close)
        got["join after close"] = _outcome(p.join)
        got["start after close"] = _outcome(p.start)
        got["is_alive after close"] = _outcome(p.is_alive)
        got["terminate after close"] = _outcome(p.terminate)
        got["kill after close"] = _outcome(p.kill)
        got["pid after close"] = _outcome(lambda: p.pid)
        got["ident after close"] = _outcome(lambda: p.ident)
        got["exitcode after close"] = _outcome(lambda: p.exitcode)
        got["sentinel after close"] = _outcome(lambda: p.sentinel)
        got["name after close"] = _outcome(lambda: p.name)
        got["daemon after close"] = _outcome(lambda: p.daemon)
    finally:
        _cleanup(p)
    comparable = {k: (v if MISUSE_EXPECTED[k][1] is not None else (v[0], None)) for k, v in got.items()}
    wrong = {k: (comparable[k], MISUSE_EXPECTED[k]) for k in MISUSE_EXPECTED if comparable.get(k) != MISUSE_EXPECTED[k]}
    assert not wrong, "got (type, message) vs expected:\n" + "\n".join(
        f"  {k}: {g!r}  expected {e!r}" for k, (g, e) in wrong.items())


def test_misuse_inside_child(impl, tmp_path):
    """Joining yourself, and a daemonic process creating a child."""
    path = str(tmp_path / "misuse.json")
    p = impl.Process(target=proc_misuse_in_child, args=(path, impl.name, impl.method), daemon=True)
    try:
        p.start()
        p.join(30)
        rep = read_json(path)
    finally:
        _cleanup(p)
    assert p.exitcode == 0
    assert rep == {
        "join_self": ["AssertionError", "can only join a child process"],
        "is_alive_self": True,
        "daemon_start_child": ["AssertionError", "daemonic processes are not allowed to have children"],
    }
    p.close()


@pytest.mark.parametrize("name", ["multiprocessing", "cproc"])
def test_misuse_of_parents_process_objects_in_fork_child(name, tmp_path):
    """A fork child inherits the parent's Process objects but may not drive them."""
    impl = ProcImpl(name, "fork")
    running = str(tmp_path / "running.json")
    path = str(tmp_path / "misuse.json")
    other = impl.Process(target=proc_touch_then_sleep, args=(running, 30))
    unstarted = impl.Process(target=proc_noop)
    p = impl.Process(target=proc_misuse_foreign, args=(path, other, unstarted))
    try:
        other.start()
        read_json(running)
        p.start()
        p.join(30)
        rep = read_json(path)
        other.terminate()
        other.join(10)
    finally:
        _cleanup(p, other)
    assert p.exitcode == 0
    assert rep == {
        "join": ["AssertionError", "can only join a child process"],
        "is_alive": ["AssertionError", "can only test a child process"],
        "start": ["AssertionError", "can only start a process object created by current process"],
    }
    p.close()
    other.close()


# ==========================================================================
# join(timeout), terminate, kill


def test_join_timeout(impl, tmp_path):
    path = str(tmp_path / "running.json")
    p = impl.Process(target=proc_touch_then_sleep, args=(path, 30))
    q = impl.Process(target=proc_sleep, args=(0.3,))
    try:
        p.start()
        read_json(path)
        for timeout in (0.5, 0.2):
            t0 = time.monotonic()
            cpu0 = time.thread_time()
            assert p.join(timeout) is None
            elapsed = time.monotonic() - t0
            cpu = time.thread_time() - cpu0
            assert cpu < 0.05, f"join({timeout}) used {cpu:.3f}s of CPU: a busy loop?"
            assert elapsed >= timeout - 0.005, f"join({timeout}) returned after {elapsed:.3f}s"
            assert elapsed < timeout + 2.0, f"join({timeout}) returned after {elapsed:.3f}s"
            assert p.is_alive() and p.exitcode is None
        t0 = time.monotonic()
        p.join(0)
        assert time.monotonic() - t0 < 0.5
        assert p.is_alive()
        # a child that ends early ends the wait early
        q.start()
        t0 = time.monotonic()
        q.join(20)
        assert time.monotonic() - t0 < 10
        assert q.exitcode == 0
        p.terminate()
        t0 = time.monotonic()
        p.join(10)
        assert time.monotonic() - t0 < 3
        assert p.exitcode == -signal.SIGTERM
    finally:
        _cleanup(p, q)
    p.close()
    q.close()


def test_terminate_and_kill(impl, tmp_path):
    path = str(tmp_path / "running.json")
    stubborn = impl.Process(target=proc_ignore_sigterm, args=(path, 30))
    try:
        stubborn.start()
        read_json(path)  # SIGTERM is ignored from now on
        stubborn.terminate()
        # still asleep (time.sleep: clock_nanosleep, select() on 3.9): a SIGTERM
        # it did not ignore would have ended it ("ended instead of blocking")
        wait_blocked(stubborn)
        assert stubborn.is_alive() and stubborn.exitcode is None
        t0 = time.monotonic()
        stubborn.kill()
        stubborn.join(10)
        assert time.monotonic() - t0 < 3
        assert stubborn.exitcode == -signal.SIGKILL
        assert repr(stubborn).endswith(" stopped exitcode=-SIGKILL>"), repr(stubborn)
        stubborn.terminate()  # after the end: no effect, no error
        assert stubborn.exitcode == -signal.SIGKILL
    finally:
        _cleanup(stubborn)
    stubborn.close()


@pytest.mark.parametrize("target", ["catches", "uncaught"])
def test_interrupt(impl, tmp_path, target):
    """Process.interrupt() (multiprocessing 3.14, cproc on every version):
    SIGINT to the child, whose KeyboardInterrupt ends it (exit code 1) unless
    it catches it."""
    if not hasattr(impl.Process, "interrupt"):
        pytest.skip("multiprocessing before 3.14 has no Process.interrupt()")
    path = str(tmp_path / "running.json")
    fn = proc_catch_sigint if target == "catches" else proc_touch_then_sleep
    p = impl.Process(target=fn, args=(path, 30))
    with pytest.raises(AttributeError):
        p.interrupt()                # not started: no Popen, as terminate()
    try:
        p.start()
        read_json(path)
        p.interrupt()
        p.join(10)
        if target == "catches":
            assert p.exitcode == 0 and read_json(path + ".int", 0) == "KeyboardInterrupt"
        else:
            assert p.exitcode == 1
        p.interrupt()                # after the end: no effect, no error
    finally:
        _cleanup(p)
    p.close()
    with pytest.raises(ValueError):
        p.interrupt()


# ==========================================================================
# reaping, active_children, sentinels


def test_active_children_reaps_zombies(impl, tmp_path):
    m = impl.module
    path = str(tmp_path / "running.json")
    assert m.active_children() == []
    long = impl.Process(target=proc_touch_then_sleep, args=(path, 30))
    quick = impl.Process(target=proc_noop)
    quick2 = impl.Process(target=proc_noop)
    try:
        long.start()
        quick.start()
        quick2.start()
        read_json(path)
        assert wait_until(lambda: pid_gone(quick.pid) and pid_gone(quick2.pid), 20)
        # A forkserver child's exit status reaches us through its sentinel
        # after the server reaps it: wait for that too, as a user would.
        sentinels = [quick.sentinel, quick2.sentinel]
        assert wait_until(lambda: len(multiprocessing.connection.wait(sentinels, 0)) == 2, 20)
        direct = _direct_child(quick.pid)  # an unreaped zombie of ours (fork, spawn)
        kids = m.active_children()
        assert long in kids and quick not in kids and quick2 not in kids
        assert len(kids) == 1
        assert quick.exitcode == 0 and quick2.exitcode == 0
        if direct:
            assert proc_state(quick.pid) is None, "active_children() did not reap the zombie"
        long.terminate()
        long.join(10)
        assert m.active_children() == []
    finally:
        _cleanup(long, quick, quick2)
    for p in (long, quick, quick2):
        p.close()


def test_is_alive_reaps_zombie(impl):
    p = impl.Process(target=proc_noop)
    try:
        p.start()
        assert wait_until(lambda: pid_gone(p.pid), 20)
        direct = _direct_child(p.pid)
        if not direct:
            # forkserver: the server reaps the child, then sends its status
            assert wait_until(lambda: not p.is_alive(), 20)
        assert p.is_alive() is False
        assert p.exitcode == 0
        if direct:
            assert proc_state(p.pid) is None, "is_alive() did not reap the zombie"
    finally:
        _cleanup(p)
    p.close()


def _waiters(impl):
    waiters = [("multiprocessing.connection.wait", multiprocessing.connection.wait)]
    if impl.name != "multiprocessing":
        waiters.insert(0, (f"{impl.name}.connection.wait", impl.wait))
    return waiters


def test_sentinel_with_connection_wait(impl, tmp_path):
    for label, wait in _waiters(impl):
        path = str(tmp_path / f"running-{label}.json")
        p = impl.Process(target=proc_touch_then_sleep, args=(path, 0.6))
        other = impl.Process(target=proc_touch_then_sleep, args=(path + ".other", 30))
        try:
            p.start()
            other.start()
            read_json(path)
            read_json(path + ".other")
            t0 = time.monotonic()
            cpu0 = time.thread_time()
            assert wait([p.sentinel, other.sentinel], timeout=0.2) == [], label
            elapsed = time.monotonic() - t0
            assert time.thread_time() - cpu0 < 0.05, f"{label}: CPU used while waiting: a busy loop?"
            assert 0.195 <= elapsed < 2.0, f"{label}: wait(timeout=0.2) took {elapsed:.3f}s"
            ready = wait([p.sentinel, other.sentinel], timeout=20)
            assert ready == [p.sentinel], label
            assert wait([p.sentinel], timeout=0) == [p.sentinel], f"{label}: sentinel stays ready"
            p.join(1)
            assert p.exitcode == 0
            other.terminate()
            assert wait([other.sentinel], timeout=10) == [other.sentinel], label
            other.join(1)
            assert other.exitcode == -signal.SIGTERM
        finally:
            _cleanup(p, other)
        p.close()
        other.close()


# ==========================================================================
# the main process's exit: daemonic children terminated, others joined


EXIT_SCRIPT_PRELUDE = r'''
import atexit
import os
import sys

_procs = []

def _report():
    # registered before the implementation is imported: runs after its exit handler
    print("at exit:", " ".join("%s=%s" % (p.name, p.exitcode) for p in _procs), flush=True)

if __name__ == "__main__":
    atexit.register(_report)
'''

EXIT_SCRIPT = r'''
def forever(path):
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(30)
    print("daemon child finished", flush=True)

def slow():
    time.sleep(0.5)
    print("non-daemon child finished", flush=True)

if __name__ == "__main__":
    path = os.path.abspath("daemon.pid")
    d = P(target=forever, args=(path,), daemon=True)
    n = P(target=slow)
    _procs.extend([d, n])
    d.start()
    n.start()
    while not os.path.exists(path):
        time.sleep(0.01)
    print("main end", flush=True)
    sys.exit(3)
'''


def test_main_exit_joins_children_and_terminates_daemons(impl, tmp_path):
    prelude = EXIT_SCRIPT_PRELUDE + SCRIPT_PRELUDE
    t0 = time.monotonic()
    try:
        result = run_impl_script(tmp_path, "exit_at_end", EXIT_SCRIPT, impl.name, impl.method,
                                 timeout=40, prelude=prelude)
    except subprocess.TimeoutExpired:
        result = None
    elapsed = time.monotonic() - t0
    assert result is not None, "the script did not end within 40s"
    cls = impl.process_class_name
    assert result.stdout.splitlines() == [
        "main end",
        "non-daemon child finished",
        f"at exit: {cls}-1=-15 {cls}-2=0",
    ], describe(result)
    assert elapsed < 15, f"the script took {elapsed:.1f}s: the daemon was waited for"
    check_ran_cleanly(result, 3)
    assert stderr_outline(result.stderr) == [], describe(result)


# ==========================================================================
# atexit handlers in a child: version-dependent, as the running multiprocessing


ATEXIT_SCRIPT = r'''
import atexit
from multiprocessing import util

PARENT = os.getpid()

def parents_handler():
    print("parent's handler in", "the parent" if os.getpid() == PARENT else "a child", flush=True)

def target():
    atexit.register(print, "child's handler", flush=True)
    util.Finalize(None, print, args=("child's finalizer",), kwargs={"flush": True}, exitpriority=0)

if __name__ == "__main__":
    atexit.register(parents_handler)
    p = P(target=target)
    p.start()
    p.join()
    print("exit", p.exitcode, flush=True)
'''


def test_atexit_handlers_in_child(impl, tmp_path):
    """From Python 3.13 (gh-83856) fork and forkserver children run the atexit
    handlers they register (not the parent's), multiprocessing's finalizers
    among them; up to 3.12 they leave with os._exit(), running none.  Spawn
    children always run theirs."""
    result, ref = run_with_reference(tmp_path, "atexit_child", ATEXIT_SCRIPT, impl)
    if sys.version_info >= (3, 13):   # the finalizers run from an atexit handler registered first
        child = ["child's handler", "child's finalizer"]
    else:                             # they run at the end of _bootstrap()
        child = ["child's finalizer"] + (["child's handler"] if impl.method == "spawn" else [])
    expected = child + ["exit 0", "parent's handler in the parent"]
    check_both_print(ref, result, expected)


# ==========================================================================
# the parent's after-fork callbacks and finalizers in a child (a fork child
# drops the finalizers and runs the callbacks; cproc skips either step when
# there is nothing to drop or run, and must not skip one when there is)


AFTER_FORK_CALLBACK = r'''
from multiprocessing import util

class Holder:
    pass

def after_fork(holder):
    print("after-fork callback ran in", "the parent" if os.getpid() == PARENT else "a child", flush=True)
'''

AFTER_FORK_SCRIPT = AFTER_FORK_CALLBACK + r'''
def target(label):
    print(label, "finalizers", sorted(f._callback.__name__ for f in util._finalizer_registry.values()),
          "start method", m.get_start_method(), flush=True)

PARENT = os.getpid()

def run(label):
    p = P(target=target, args=(label,))
    p.start()
    p.join()
    print(label, "exit", p.exitcode, flush=True)

if __name__ == "__main__":
    m.set_start_method(METHOD)
    run("none registered:")
    holder = Holder()
    util.register_after_fork(holder, after_fork)
    util.Finalize(holder, print, args=("parent's finalizer",), kwargs={"flush": True}, exitpriority=5)
    run("both registered:")
'''


def test_parents_after_fork_callbacks_and_finalizers_in_child(impl, tmp_path):
    """A fork child runs the callbacks of util.register_after_fork() and none
    of its parent's finalizers; a spawn or forkserver child inherits neither.
    The same with nothing registered, and with one of each."""
    result, ref = run_with_reference(tmp_path, "after_fork", AFTER_FORK_SCRIPT, impl)
    forked = impl.method == "fork"
    expected = ["none registered: finalizers [] start method " + impl.method,
                "none registered: exit 0"]
    expected += ["after-fork callback ran in a child"] if forked else []
    expected += ["both registered: finalizers [] start method " + impl.method,
                 "both registered: exit 0", "parent's finalizer"]
    check_both_print(ref, result, expected)


MAIN_AFTER_FORK_SCRIPT = AFTER_FORK_CALLBACK + r'''
# At import: in the parent, and again wherever a child imports this module
# (a spawn child; a forkserver child, or cproc's fork server, which forks it).
PARENT = int(os.environ.setdefault("AFTER_FORK_PARENT", str(os.getpid())))
HOLDER = Holder()
util.register_after_fork(HOLDER, after_fork)

def target():
    print("target ran", flush=True)

if __name__ == "__main__":
    p = P(target=target)
    p.start()
    p.join()
    print("exit", p.exitcode, flush=True)
'''


def test_after_fork_callbacks_registered_by_the_main_module(impl, tmp_path):
    """A callback the main module registers at import runs in a fork child
    (inherited) and in a forkserver child (it imported the main module, or was
    forked from a server that did); a spawn child runs none from 3.10 on (3.9's
    _bootstrap() runs the callbacks under every start method)."""
    result, ref = run_with_reference(tmp_path, "main_after_fork", MAIN_AFTER_FORK_SCRIPT, impl)
    runs = impl.method != "spawn" or sys.version_info < (3, 10)
    expected = ["after-fork callback ran in a child"] if runs else []
    expected += ["target ran", "exit 0"]
    check_both_print(ref, result, expected)


# ==========================================================================
# the collector in a child: as multiprocessing's (on in a spawn child's
# __main__ and target; a child's gc.disable() is its own)


GC_SCRIPT = r'''
import gc

def state(where):
    print(where, gc.isenabled(), gc.get_threshold(), flush=True)

if __name__ == "__mp_main__":          # a spawn child re-running this module
    state("child's __main__")

def target(disable):
    state("child's target")
    if disable:
        gc.disable()
        state("child after gc.disable()")

if __name__ == "__main__":
    for disable in (False, True):
        p = P(target=target, args=(disable,))
        p.start()
        p.join()
        print("exit", p.exitcode, flush=True)
'''


def test_collector_state_in_child(impl, tmp_path):
    result, ref = run_with_reference(tmp_path, "gc_child", GC_SCRIPT, impl)
    for res in (ref, result):
        check_ran_cleanly(res)
    assert "child's target True" in result.stdout, describe(result)
    assert "child after gc.disable() False" in result.stdout, describe(result)
    # cproc's forkserver runs __main__ once, in the server (README: Differences)
    main_lines = [sorted(set(ln for ln in r.stdout.splitlines() if "__main__" in ln)) for r in (result, ref)]
    assert main_lines[0] == main_lines[1], describe(result) + describe(ref)
    rest = [[ln for ln in r.stdout.splitlines() if "__main__" not in ln] for r in (result, ref)]
    assert rest[0] == rest[1], describe(result) + describe(ref)


# ==========================================================================
# Ctrl+C while the main process waits in join()


CTRL_C_SCRIPT = r'''
import signal

def sleeper():
    time.sleep(30)

if __name__ == "__main__":
    # Python's own handler, even when the test run itself ignores SIGINT
    # (started in the background): as in a terminal
    signal.signal(signal.SIGINT, signal.default_int_handler)
    p = P(target=sleeper)
    p.start()
    print("ready", p.pid, flush=True)
    try:
        p.join()
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
        p.terminate()
        p.join()
        print("exitcode", p.exitcode, flush=True)
        sys.exit(0)
    print("join returned", flush=True)
    sys.exit(3)
'''


def test_ctrl_c_during_join(impl, tmp_path):
    proc = popen_impl_script(tmp_path, "ctrl_c", CTRL_C_SCRIPT, impl.name, impl.method)
    try:
        line = read_line(proc.stdout, 30)
        assert line and line.startswith("ready "), f"not ready: {line!r}; stderr: {proc.stderr.read()!r}"
        int(line.split()[1])  # the child pid
        wait_blocked(proc)  # in join()
        assert proc.poll() is None, "join() did not block"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)  # to the main process only, as the test driver
        line = read_line(proc.stdout, 10)
        elapsed = time.monotonic() - t0
        assert line == "KeyboardInterrupt", f"got {line!r}"
        assert elapsed < 1.0, f"KeyboardInterrupt came {elapsed:.2f}s after SIGINT"
        assert read_line(proc.stdout, 10) == "exitcode -15"
        assert proc.wait(10) == 0
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        kill_session(proc.pid)


# ==========================================================================
# the main script in a spawned child: run again as __mp_main__, as
# multiprocessing runs it (cproc runs a plain script without runpy.run_path,
# which would import pkgutil and typing: spawn.import_main_path)


MAIN_MODULE_SCRIPT = r'''
GREETING = "h\u00e9llo"

def show(where, module):
    g = vars(module)
    print(where, g["__name__"], os.path.basename(g["__file__"]), g["__cached__"], repr(g["__package__"]),
          g["__spec__"], g["__loader__"], g["__doc__"], g.get("GREETING"), flush=True)

if __name__ == "__mp_main__":          # a spawn child running this script again
    show("running:", sys.modules[__name__])
    print("argv[0] while running:", os.path.basename(sys.argv[0]), flush=True)
    print("__main__ while running:", sys.modules["__main__"].__name__, flush=True)

def target():
    import __main__
    show("target:", __main__)
    print("same module:", sys.modules["__mp_main__"] is __main__, target.__module__,
          os.path.basename(sys.argv[0]), sys.argv[1:], flush=True)

if __name__ == "__main__":
    p = P(target=target)
    p.start()
    p.join()
    print("exit", p.exitcode, flush=True)
'''


@pytest.mark.parametrize("compiled", [False, True], ids=["source", "compiled"])
def test_spawn_child_runs_main_script_as_mp_main(compiled, tmp_path):
    """The __mp_main__ a spawn child makes of the parent's script (its source,
    or a compiled .pyc run as `python main.pyc`): the same globals, sys.argv
    and sys.modules as multiprocessing's child, while it runs and after."""
    results = {}
    for name in ("multiprocessing", "cproc"):
        directory = tmp_path / name
        directory.mkdir()
        results[name] = run_impl_script(directory, "main_module", MAIN_MODULE_SCRIPT, name, "spawn",
                                        compiled=compiled)
        check_ran_cleanly(results[name])
        assert stderr_outline(results[name].stderr) == [], describe(results[name])
    ref, result = results["multiprocessing"], results["cproc"]
    assert result.stdout == ref.stdout, describe(result) + describe(ref)
    suffix = "pyc" if compiled else "py"
    assert ref.stdout.splitlines()[:2] == [
        "running: __mp_main__ main_module.%s None '' None None None héllo" % suffix,
        "argv[0] while running: main_module.%s" % suffix], describe(ref)
    assert "exit 0" in ref.stdout, describe(ref)
