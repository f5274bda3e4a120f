"""cproc.futures.ProcessPoolExecutor, differential against concurrent.futures'.

The ``futures`` fixture runs each scenario under ``concurrent.futures`` and
``cproc.futures`` (select with ``-k concurrent`` / ``-k cproc``): submit,
result and exception, map (order, several iterables, chunksize, timeout,
exceptions at iteration), shutdown (wait, no wait, cancel_futures, twice), the
with statement, cancel, as_completed / wait / callbacks, the initializer and
its failure (BrokenProcessPool), max_tasks_per_child, argument validation.
Then cproc's own promises: a dead worker fails only its future with
WorkerLostError (a BrokenProcessPool) and the executor goes on, lambdas and
closures, cancelled tasks are skipped by the workers, terminate_workers() /
kill_workers(), and WorkerLostError's lazy import.
"""

import concurrent.futures
import concurrent.futures.process
import importlib
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from helpers.blocking import wait_until

pytestmark = pytest.mark.timeout(60)

BrokenProcessPool = concurrent.futures.process.BrokenProcessPool


@pytest.fixture(params=["concurrent.futures", "cproc.futures"])
def futures(request):
    return importlib.import_module(request.param)


@pytest.fixture
def cfutures():
    return importlib.import_module("cproc.futures")


# Top-level task functions: fork workers have them; spawn workers import this module.

_initialized = None


def set_initialized(value):
    global _initialized
    _initialized = value


def get_initialized():
    return _initialized


def failing_initializer():
    raise RuntimeError("initializer failed on purpose")


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


def die(code):
    os._exit(code)


def error(exc_type, message):
    raise exc_type(message)


# ---- submit / result / exception ---------------------------------------------------

def test_submit_result_and_exception(futures):
    with futures.ProcessPoolExecutor(2) as ex:
        f = ex.submit(pow, 2, 5)
        assert isinstance(f, concurrent.futures.Future)
        assert f.result(timeout=10) == 32 and f.done() and not f.cancelled()
        assert ex.submit(int, "ff", base=16).result(timeout=10) == 255
        g = ex.submit(error, KeyError, "nope")
        e = g.exception(timeout=10)
        assert type(e) is KeyError and e.args == ("nope",)
        with pytest.raises(KeyError):
            g.result(timeout=10)
        # the worker's traceback travels as the cause, as the standard executor's
        assert "error" in str(e.__cause__)


def test_submit_after_shutdown(futures):
    ex = futures.ProcessPoolExecutor(1)
    ex.shutdown()
    with pytest.raises(RuntimeError, match="^cannot schedule new futures after shutdown$"):
        ex.submit(pow, 2, 2)
    ex.shutdown()                           # twice: nothing happens
    with futures.ProcessPoolExecutor(1) as ex:
        pass
    with pytest.raises(RuntimeError, match="^cannot schedule new futures after shutdown$"):
        ex.submit(pow, 2, 2)


# ---- map -------------------------------------------------------------------------------

@pytest.mark.parametrize("chunksize", [1, 3, 1000])
def test_map(futures, chunksize):
    with futures.ProcessPoolExecutor(2) as ex:
        assert list(ex.map(pow, range(50), [2] * 40, chunksize=chunksize)) == [x * x for x in range(40)]
        assert list(ex.map(abs, [], chunksize=chunksize)) == []
        it = ex.map(abs, range(-5, 0), chunksize=chunksize)
        assert iter(it) is it and not isinstance(it, list)
        assert list(it) == [5, 4, 3, 2, 1]


@pytest.mark.parametrize("chunksize", [1, 2])
def test_map_exception_raised_at_iteration(futures, chunksize):
    with futures.ProcessPoolExecutor(2) as ex:
        it = ex.map(int, ["1", "2", "x", "4"], chunksize=chunksize)   # map itself does not raise
        assert next(it) == 1
        assert next(it) == 2
        with pytest.raises(ValueError, match="invalid literal"):
            next(it)
        with pytest.raises(StopIteration):
            next(it)


def test_map_timeout(futures):
    with futures.ProcessPoolExecutor(1) as ex:
        it = ex.map(sleep_then, [0, 2, 2], ["a", "b", "c"], timeout=0.5)
        assert next(it) == "a"
        with pytest.raises(concurrent.futures.TimeoutError):
            next(it)


def test_map_bad_chunksize(futures):
    with futures.ProcessPoolExecutor(1) as ex:
        for bad in (0, -1):
            with pytest.raises(ValueError, match=r"^chunksize must be >= 1\.$"):
                ex.map(abs, [1], chunksize=bad)


# ---- shutdown -----------------------------------------------------------------------------

def test_shutdown_wait_finishes_the_queued_work(futures):
    ex = futures.ProcessPoolExecutor(2)
    fs = [ex.submit(sleep_then, 0.05, i) for i in range(8)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in fs)
    assert [f.result() for f in fs] == list(range(8))


def test_shutdown_nowait(futures):
    ex = futures.ProcessPoolExecutor(2)
    fs = [ex.submit(sleep_then, 0.1, i) for i in range(4)]
    t0 = time.monotonic()
    ex.shutdown(wait=False)
    assert time.monotonic() - t0 < 0.1 + 0.5 and not all(f.done() for f in fs)
    assert [f.result(timeout=10) for f in fs] == list(range(4))
    ex.shutdown(wait=True)


def test_shutdown_cancel_futures(futures):
    ex = futures.ProcessPoolExecutor(1)
    first = ex.submit(sleep_then, 0.5, "first")
    wait_until(first.running)
    rest = [ex.submit(sleep_then, 0.01, i) for i in range(10)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result() == "first"
    assert all(f.done() for f in rest)
    # the standard executor has at most max_workers + 1 calls beyond cancelling
    assert sum(f.cancelled() for f in rest) >= len(rest) - 2
    assert all(f.result() == i for i, f in enumerate(rest) if not f.cancelled())


def test_shutdown_cancel_futures_cancels_a_pending_map(futures):
    ex = futures.ProcessPoolExecutor(1)
    first = ex.submit(sleep_then, 0.5, "first")
    wait_until(first.running)
    it = ex.map(abs, range(-5, 0))
    ex.shutdown(wait=True, cancel_futures=True)
    got = []
    with pytest.raises(concurrent.futures.CancelledError):
        for x in it:
            got.append(x)
    # Items already handed to a worker run. The standard executor hands out up to
    # max_workers + 1 calls ahead (its call queue), so it may deliver 5, then 4;
    # cproc's skips every chunk no worker has taken (the one worker is busy).
    ahead = [[], [5], [5, 4]] if futures is concurrent.futures else [[], [5]]
    assert got in ahead
    assert first.result() == "first"


# ---- futures: cancel, as_completed, wait, callbacks -------------------------------------------

def test_cancel(futures):
    with futures.ProcessPoolExecutor(1) as ex:
        first = ex.submit(sleep_then, 0.5, "first")
        wait_until(first.running)
        later = [ex.submit(sleep_then, 0, i) for i in range(5)]
        last = later[-1]
        assert first.cancel() is False              # running
        assert last.cancel() is True and last.cancelled() and last.done()
        assert last.cancel() is True                # twice
        with pytest.raises(concurrent.futures.CancelledError):
            last.result(timeout=10)
        done = list(concurrent.futures.as_completed(later, timeout=10))
        assert set(done) == set(later)
        assert [f.result() for f in later[:-1]] == [0, 1, 2, 3]
        assert first.result(timeout=10) == "first"


def test_as_completed_wait_and_callbacks(futures):
    seen = []
    with futures.ProcessPoolExecutor(2) as ex:
        fs = [ex.submit(sleep_then, 0.01 * (i % 3), i) for i in range(12)]
        for f in fs:
            f.add_done_callback(lambda f: seen.append(f.result()))
        assert sorted(f.result() for f in concurrent.futures.as_completed(fs, timeout=20)) == list(range(12))
        done, not_done = concurrent.futures.wait(fs, timeout=20)
        assert done == set(fs) and not not_done
        slow = ex.submit(sleep_then, 0.5, "slow")
        fast = ex.submit(pow, 3, 2)
        done, not_done = concurrent.futures.wait([slow, fast], timeout=20,
                                                 return_when=concurrent.futures.FIRST_COMPLETED)
        assert fast in done
        failing = ex.submit(int, "x")
        done, _ = concurrent.futures.wait([slow, failing], timeout=20,
                                          return_when=concurrent.futures.FIRST_EXCEPTION)
        assert failing in done
    wait_until(lambda: len(seen) == 12)
    assert sorted(seen) == list(range(12))


# ---- initializer, max_tasks_per_child, validation --------------------------------------------

def test_initializer(futures):
    with futures.ProcessPoolExecutor(2, initializer=set_initialized, initargs=("yes",)) as ex:
        assert [ex.submit(get_initialized).result(timeout=10) for _ in range(4)] == ["yes"] * 4


def test_initializer_failure_breaks_the_executor(futures):
    ex = futures.ProcessPoolExecutor(2, initializer=failing_initializer)
    try:
        f = ex.submit(pow, 2, 2)
        assert isinstance(f.exception(timeout=20), BrokenProcessPool)
        wait_until(lambda: ex._broken)
        with pytest.raises(BrokenProcessPool):
            ex.submit(pow, 2, 2)
    finally:
        ex.shutdown()


def _needs_max_tasks_per_child(futures):
    if futures.__name__ == "concurrent.futures" and sys.version_info < (3, 11):
        pytest.skip("concurrent.futures has max_tasks_per_child from 3.11 (cproc on every version)")


def test_max_tasks_per_child(futures):
    _needs_max_tasks_per_child(futures)
    with futures.ProcessPoolExecutor(1, max_tasks_per_child=1) as ex:
        assert ex._mp_context.get_start_method() == "spawn"     # the default, as the standard's
        pids = {ex.submit(os.getpid).result(timeout=30) for _ in range(3)}
    assert len(pids) == 3 and os.getpid() not in pids


def test_validation(futures):
    for bad in (0, -1):
        with pytest.raises(ValueError, match="^max_workers must be greater than 0$"):
            futures.ProcessPoolExecutor(bad)
    with pytest.raises(TypeError, match="^initializer must be a callable$"):
        futures.ProcessPoolExecutor(1, initializer=3)
    _needs_max_tasks_per_child(futures)
    with pytest.raises(ValueError, match="^max_tasks_per_child must be >= 1$"):
        futures.ProcessPoolExecutor(1, max_tasks_per_child=0)
    with pytest.raises(TypeError, match="^max_tasks_per_child must be an integer$"):
        futures.ProcessPoolExecutor(1, max_tasks_per_child=1.5)
    with pytest.raises(ValueError, match="incompatible with the 'fork' multiprocessing start method"):
        futures.ProcessPoolExecutor(1, max_tasks_per_child=1,
                                    mp_context=multiprocessing.get_context("fork"))


def test_pickling_error_fails_the_future(futures):
    with futures.ProcessPoolExecutor(1) as ex:
        f = ex.submit(id, threading.Lock())
        assert isinstance(f.exception(timeout=10), TypeError)
        assert ex.submit(pow, 2, 3).result(timeout=10) == 8        # still serving
        it = ex.map(id, [threading.Lock()])
        with pytest.raises(TypeError):
            next(it)


def test_unpicklable_function_fails_the_future(cfutures):
    unpicklable = threading.Lock().acquire          # not even cloudpickle takes it
    with cfutures.ProcessPoolExecutor(1) as ex:
        assert isinstance(ex.submit(unpicklable).exception(timeout=10), TypeError)
        it = ex.map(unpicklable, [1, 2])
        with pytest.raises(TypeError):
            next(it)
        assert ex.submit(pow, 2, 3).result(timeout=10) == 8


# ---- cproc's own promises ---------------------------------------------------------------------

def test_standard_executor_breaks_on_a_dead_worker():
    """What cproc changes (the next test): the standard executor is broken for good."""
    ex = concurrent.futures.ProcessPoolExecutor(1)
    try:
        e = ex.submit(die, 3).exception(timeout=20)
        assert isinstance(e, BrokenProcessPool)
        with pytest.raises(BrokenProcessPool):
            ex.submit(pow, 2, 2)
    finally:
        ex.shutdown()


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_dead_worker_fails_only_its_future(cfutures, cproc, how):
    with cfutures.ProcessPoolExecutor(2) as ex:
        others = [ex.submit(sleep_then, 0.05, i) for i in range(6)]
        if how == "exit":
            dead = ex.submit(die, 3)
        else:
            dead = ex.submit(lambda: os.kill(os.getpid(), signal.SIGKILL))
        more = [ex.submit(sleep_then, 0.05, i) for i in range(6, 12)]
        e = dead.exception(timeout=20)
        assert type(e) is cproc.WorkerLostError
        assert isinstance(e, BrokenProcessPool) and isinstance(e, multiprocessing.ProcessError)
        assert e.exitcode == (3 if how == "exit" else -signal.SIGKILL) and e.pid > 0
        assert str(e.pid) in str(e)
        assert [f.result(timeout=20) for f in others + more] == list(range(12))
        assert ex.submit(pow, 2, 10).result(timeout=20) == 1024        # the executor goes on
        assert list(ex.map(abs, [-1, -2])) == [1, 2]


def test_except_broken_process_pool_catches_worker_lost(cfutures):
    with cfutures.ProcessPoolExecutor(1) as ex:
        try:
            ex.submit(die, 1).result(timeout=20)
        except BrokenProcessPool as e:
            caught = e
        assert type(caught).__name__ == "WorkerLostError"


def test_lambdas_and_closures(cfutures):
    k = 10

    def add_k(x):
        return x + k

    with cfutures.ProcessPoolExecutor(2) as ex:
        assert ex.submit(lambda: k * 2).result(timeout=10) == 20
        assert list(ex.map(add_k, range(5))) == [10, 11, 12, 13, 14]
        assert list(ex.map(lambda a, b: a * b, range(4), range(4), chunksize=2)) == [0, 1, 4, 9]


def _count(counter):
    with counter.get_lock():
        counter.value += 1


@pytest.mark.parametrize("cancel", ["future", "shutdown", "map"])
def test_cancelled_tasks_do_not_run(cfutures, cproc, cancel):
    counter = cproc.Value("i", 0)
    ex = cfutures.ProcessPoolExecutor(1)
    try:
        first = ex.submit(sleep_then, 0.3, "first")
        wait_until(first.running)
        if cancel == "map":
            it = ex.map(_count, [counter] * 20, timeout=0.05)
            with pytest.raises(concurrent.futures.TimeoutError):
                next(it)                    # ... and the map's futures are cancelled
            ex.shutdown()
            assert counter.value == 0
            return
        rest = [ex.submit(_count, counter) for _ in range(20)]
        if cancel == "future":
            assert all(f.cancel() for f in rest)
            ex.shutdown()
        else:
            ex.shutdown(cancel_futures=True)
        assert all(f.cancelled() for f in rest)
        assert counter.value == 0
    finally:
        ex.shutdown()


def test_max_tasks_per_child_under_load(cfutures):
    """Two workers each leaving after two tasks, while a map keeps them busy
    (the standard executor of 3.11 can hang here)."""
    with cfutures.ProcessPoolExecutor(2, max_tasks_per_child=2) as ex:
        pids = list(ex.map(sleep_then, [0.01] * 12, [None] * 12))
        assert pids == [None] * 12
        assert len({ex.submit(os.getpid).result(timeout=30) for _ in range(4)}) >= 2


@pytest.mark.parametrize("operation", ["terminate_workers", "kill_workers"])
def test_terminate_and_kill_workers(cfutures, operation):
    ex = cfutures.ProcessPoolExecutor(2)
    running = [ex.submit(sleep_then, 30, i) for i in range(2)]
    wait_until(lambda: all(f.running() for f in running))
    pending = [ex.submit(sleep_then, 30, i) for i in range(3)]
    t0 = time.monotonic()
    getattr(ex, operation)()
    assert time.monotonic() - t0 < 10
    for f in running:
        assert isinstance(f.exception(timeout=10), BrokenProcessPool)
    assert all(f.cancelled() for f in pending)
    with pytest.raises(RuntimeError):
        ex.submit(pow, 2, 2)
    ex.shutdown()


def test_multiprocessing_context_is_accepted(cfutures):
    with cfutures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert ex._mp_context.get_start_method() == "spawn"
        assert ex.submit(pow, 3, 3).result(timeout=30) == 27


def test_worker_lost_error_is_made_on_first_use():
    code = ("import sys, cproc, cproc.pool; assert 'concurrent.futures.process' not in sys.modules;"
            "import pickle; from concurrent.futures.process import BrokenProcessPool as B;"
            "W = cproc.WorkerLostError; assert W is cproc.pool.WorkerLostError is cproc.context.WorkerLostError"
            " is cproc.get_context('spawn').WorkerLostError and issubclass(W, B);"
            "e = pickle.loads(pickle.dumps(W('m', 5, -9))); assert type(e) is W and (e.pid, e.exitcode) == (5, -9);"
            "print(W.__module__, W.__qualname__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["cproc", "WorkerLostError"]
