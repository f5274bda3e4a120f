"""Any callable as a Process target, under every start method.

multiprocessing pickles the Process object for the spawn and forkserver start
methods with plain pickle: a lambda, a closure, a local class, or a function of
a __main__ the child cannot import (``python -c``, a program read from stdin)
fails there.  cproc pickles it with plain pickle first and falls back to
cloudpickle for what plain pickle refuses; when the child cannot re-create the
main module, the objects of __main__ travel by value (cloudpickle) from the
start.  What neither can pickle (a lock) fails with plain pickle's error, as in
multiprocessing.  Under fork nothing is pickled: any callable always worked.
"""

import os
import pickle
import subprocess
import sys
import threading

import multiprocessing
import pytest

from helpers.impls import START_METHODS, pickle_error, warm_up_start_methods
from helpers.scripts import child_env

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    warm_up_start_methods()


def _run(p, timeout=30):
    try:
        p.start()
        p.join(timeout)
        assert p.exitcode == 0, f"child exit code {p.exitcode}"
    finally:
        if p.exitcode is None and p.pid is not None:
            p.kill()
            p.join(5)


def _read(path):
    with open(path) as f:
        return f.read()


def write_value(path, value):
    with open(path, "w") as f:
        f.write(repr(value))


def make_writer(prefix, scale):
    def writer(path, n, *, suffix=""):
        write_value(path, f"{prefix}{n * scale}{suffix}")
    return writer


# --------------------------------------------------------------------------
# lambdas, closures, local classes


@pytest.mark.parametrize("method", START_METHODS)
def test_lambda_target(cproc, method):
    ctx = cproc.get_context(method)
    q = ctx.Queue()
    k = 3
    p = ctx.Process(target=lambda x: q.put((x * k, os.getpid())), args=(14,))
    _run(p)
    assert q.get(timeout=10) == (42, p.pid)


@pytest.mark.parametrize("method", START_METHODS)
def test_closure_target_with_args(cproc, method, tmp_path):
    path = str(tmp_path / "out")
    p = cproc.get_context(method).Process(target=make_writer("n=", 2), args=(path, 21), kwargs={"suffix": "!"})
    _run(p)
    assert _read(path) == repr("n=42!")


@pytest.mark.parametrize("method", START_METHODS)
def test_nested_function_and_local_class(cproc, method, tmp_path):
    path = str(tmp_path / "out")
    ctx = cproc.get_context(method)

    class Job:
        def __init__(self, items):
            self.items = items

        def total(self):
            return sum(self.items)

    class Worker(ctx.Process):
        def __init__(self, job):
            super().__init__()
            self.job = job

        def run(self):
            write_value(path, (type(self).__name__, self.job.total()))

    _run(Worker(Job([1, 2, 3])))
    assert _read(path) == repr(("Worker", 6))


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_refuses_a_lambda(method):
    """What cproc does beyond multiprocessing: its spawn and forkserver refuse."""
    p = multiprocessing.get_context(method).Process(target=lambda: None)
    with pytest.raises((pickle.PicklingError, AttributeError)):
        p.start()


@pytest.mark.parametrize("method", START_METHODS)
def test_plain_targets_still_pickle_by_reference(cproc, method, tmp_path):
    path = str(tmp_path / "out")
    p = cproc.get_context(method).Process(target=write_value, args=(path, [1, "a"]))
    _run(p)
    assert _read(path) == repr([1, "a"])


# --------------------------------------------------------------------------
# what neither plain pickle nor cloudpickle can pickle: multiprocessing's error


def _start_error(ctx, **kw):
    p = ctx.Process(**kw)
    with pytest.raises(Exception) as info:
        p.start()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_argument_same_error(cproc, method):
    lock = threading.Lock()
    kw = dict(target=write_value, args=("/nonexistent", lock))
    mp_err = _start_error(multiprocessing.get_context(method), **kw)
    cp_err = _start_error(cproc.get_context(method), **kw)
    assert mp_err == (TypeError, "cannot pickle '_thread.lock' object")
    assert cp_err == mp_err


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_lambda_capturing_a_lock_same_error(cproc, method):
    lock = threading.Lock()
    target = lambda: lock.locked()  # noqa: E731 - a local object on purpose
    mp_err = _start_error(multiprocessing.get_context(method), target=target)
    cp_err = _start_error(cproc.get_context(method), target=target)
    # a local object: plain pickle refuses it by name (AttributeError:
    # "Can't pickle local object 'test_lambda_capturing_a_lock_same_error.<locals>.<lambda>'",
    # 3.13: "Can't get local object ...")
    assert mp_err == pickle_error(target)
    assert mp_err[0] is AttributeError and "test_lambda_capturing_a_lock_same_error.<locals>.<lambda>" in mp_err[1]
    assert cp_err == mp_err


# --------------------------------------------------------------------------
# a function of a __main__ that the child cannot import


_MAIN_SCRIPT = """\
import os, sys
m = __import__(sys.argv[1])

def target(path, x):
    with open(path, "w") as f:
        f.write(str(x * 2))

class Doubler:
    def __call__(self, path, x):
        target(path, x)

if __name__ == "__main__":
    ctx = m.get_context(sys.argv[2])
    out = sys.argv[3]
    p = ctx.Process(target=target, args=(out + ".fn", 21))
    p.start(); p.join()
    q = ctx.Process(target=Doubler(), args=(out + ".obj", 8))
    q.start(); q.join()
    print("exitcodes", p.exitcode, q.exitcode)
"""


def _run_main(how, impl, method, out, cwd):
    env = child_env()
    env.pop("PYTHONUNBUFFERED", None)
    if how == "stdin":
        argv, stdin = [sys.executable, "-", impl, method, out], _MAIN_SCRIPT
    else:
        argv, stdin = [sys.executable, "-c", _MAIN_SCRIPT, impl, method, out], ""
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, cwd=str(cwd),
                          timeout=50, start_new_session=True)
    return proc


@pytest.mark.parametrize("how", ["stdin", "dash-c"])
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_main_module_function_target(method, how, tmp_path):
    out_mp, out_cp = str(tmp_path / "mp"), str(tmp_path / "cp")
    ref = _run_main(how, "multiprocessing", method, out_mp, tmp_path)
    assert ref.returncode == 0, ref.stderr
    assert ref.stdout.split() == ["exitcodes", "1", "1"], ref.stderr   # its children cannot find __main__
    assert not os.path.exists(out_mp + ".fn") and not os.path.exists(out_mp + ".obj")

    res = _run_main(how, "cproc", method, out_cp, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["exitcodes", "0", "0"], res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert _read(out_cp + ".fn") == "42"
    assert _read(out_cp + ".obj") == "16"
