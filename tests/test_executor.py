"""concurrent.futures.ProcessPoolExecutor(mp_context=...) on cproc's contexts,
against the same scenarios on multiprocessing's, on every start method.

The executor is the standard library's: it takes from its context Process,
Lock, BoundedSemaphore and SimpleQueue (whose ``_reader`` it waits on with
multiprocessing.connection.wait), and subclasses multiprocessing.queues.Queue
with them. Ids are ``multiprocessing-spawn``, ``cproc-fork``, ...; select a
side with ``-k multiprocessing`` or ``-k cproc``.
"""

import os
import signal
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, BrokenExecutor, CancelledError
from concurrent.futures.process import BrokenProcessPool

import pytest

from helpers.blocking import wait_until
from helpers.impls import ProcImpl, impl_method_params, warm_up_start_methods

pytestmark = pytest.mark.timeout(90)

BIG = 6 << 20   # bytes: several MiB, more than any pipe or ring chunk holds


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    """Process-lifetime helpers in every test's leak baseline: the forkservers,
    and multiprocessing's resource sharer (its listening socket), which hands
    the executor's call-queue pipe to forkserver workers."""
    warm_up_start_methods()
    for name in ("multiprocessing", "cproc"):
        try:
            with ProcessPoolExecutor(1, mp_context=ProcImpl(name, "forkserver").ctx) as ex:
                ex.submit(square, 1).result(timeout=30)
        except Exception:  # noqa: BLE001 - the tests report it
            pass


@pytest.fixture(params=impl_method_params())
def impl(request):
    name, method = request.param
    return ProcImpl(name, method)


@pytest.fixture
def executor(impl):
    """executor(**kwargs) -> a ProcessPoolExecutor on impl's context, shut down at teardown."""
    made = []

    def make(max_workers=2, **kwargs):
        ex = ProcessPoolExecutor(max_workers, mp_context=impl.ctx, **kwargs)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.shutdown(wait=True, cancel_futures=True)


# ---- what the workers run (module level: spawn and forkserver import it) ----

def square(x):
    return x * x


def raise_value_error(x):
    raise ValueError("bad value %r" % (x,))


def exit_now(code):
    os._exit(code)


def kill_self(_):
    os.kill(os.getpid(), signal.SIGKILL)


def failing_initializer():
    raise RuntimeError("initializer failed")


_initialized = "no"


def set_initialized(value):
    global _initialized
    _initialized = value


def get_initialized():
    return _initialized


def my_pid(_=None):
    return os.getpid()


def make_bytes(n):
    return b"\x5a" * n


def checksum(data):
    return len(data), data[:3], data[-3:]


def sleep_then(seconds, value):
    time.sleep(seconds)
    return value


# ---- tests ----------------------------------------------------------------

def test_map_and_submit(executor):
    ex = executor(2)
    assert list(ex.map(square, range(50))) == [x * x for x in range(50)]
    assert list(ex.map(square, range(50), chunksize=7)) == [x * x for x in range(50)]
    fs = [ex.submit(square, i) for i in range(20)]
    assert [f.result(timeout=30) for f in fs] == [i * i for i in range(20)]
    assert ex.submit(pow, 2, 10).result(timeout=30) == 1024


def test_worker_exception_carries_remote_traceback(executor):
    ex = executor(2)
    f = ex.submit(raise_value_error, 7)
    with pytest.raises(ValueError, match=r"bad value 7") as info:
        f.result(timeout=30)
    cause = info.value.__cause__
    assert type(cause).__name__ == "_RemoteTraceback"
    assert "raise_value_error" in str(cause) and 'raise ValueError("bad value' in str(cause)
    assert "".join(traceback.format_exception(type(info.value), info.value, info.value.__traceback__)).count("ValueError: bad value 7") == 2
    # the pool goes on working
    assert ex.submit(square, 3).result(timeout=30) == 9
    with pytest.raises(ValueError):
        list(ex.map(raise_value_error, [1, 2]))


@pytest.mark.parametrize("how", ["exit", "sigkill"])
def test_worker_death_breaks_the_pool(executor, how):
    ex = executor(2)
    assert ex.submit(square, 2).result(timeout=30) == 4
    fn, arg = (exit_now, 3) if how == "exit" else (kill_self, None)
    f = ex.submit(fn, arg)
    with pytest.raises(BrokenProcessPool):
        f.result(timeout=30)
    with pytest.raises(BrokenProcessPool):
        ex.submit(square, 1)


def test_pending_futures_fail_when_a_worker_dies(executor):
    ex = executor(1)
    fs = [ex.submit(sleep_then, 0.05, i) for i in range(3)] + [ex.submit(exit_now, 1)]
    fs += [ex.submit(square, i) for i in range(5)]
    outcomes = []
    for f in fs:
        try:
            outcomes.append(f.result(timeout=30))
        except BrokenProcessPool:
            outcomes.append("broken")
    assert outcomes[:3] == [0, 1, 2]
    assert outcomes[3:] == ["broken"] * 6


def test_initializer(executor):
    ex = executor(2, initializer=set_initialized, initargs=("yes",))
    assert [f.result(timeout=30) for f in [ex.submit(get_initialized) for _ in range(4)]] == ["yes"] * 4


def test_initializer_failure_breaks_the_pool(executor):
    ex = executor(2, initializer=failing_initializer)
    try:
        f = ex.submit(square, 1)
    except BrokenExecutor:      # already broken: as multiprocessing may be too
        pass
    else:
        with pytest.raises(BrokenProcessPool):
            f.result(timeout=30)
    assert wait_until(lambda: ex._broken, 10)
    with pytest.raises(BrokenProcessPool):
        ex.submit(square, 1)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child is new in 3.11")
def test_max_tasks_per_child(executor, impl):
    if impl.method == "fork":
        with pytest.raises(ValueError, match="max_tasks_per_child is incompatible"):
            executor(1, max_tasks_per_child=2)
        return
    ex = executor(1, max_tasks_per_child=2)
    pids = [ex.submit(my_pid).result(timeout=30) for _ in range(6)]
    assert len(set(pids)) == 3
    assert [pids.count(p) for p in dict.fromkeys(pids)] == [2, 2, 2]


def test_big_data_both_ways(executor):
    ex = executor(2)
    data = bytes(range(256)) * (BIG // 256)
    assert ex.submit(checksum, data).result(timeout=60) == (len(data), data[:3], data[-3:])
    out = ex.submit(make_bytes, BIG).result(timeout=60)
    assert len(out) == BIG and out == b"\x5a" * BIG
    results = list(ex.map(make_bytes, [BIG // 4] * 8))
    assert [len(r) for r in results] == [BIG // 4] * 8


def test_shutdown_wait_false_finishes_running_work(executor):
    ex = executor(2)
    fs = [ex.submit(sleep_then, 0.1, i) for i in range(6)]
    ex.shutdown(wait=False)
    assert [f.result(timeout=30) for f in fs] == list(range(6))
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(square, 1)
    ex.shutdown(wait=True)


@pytest.mark.parametrize("wait", [True, False])
def test_shutdown_cancel_futures(executor, wait):
    ex = executor(1)
    first = ex.submit(sleep_then, 0.3, "first")
    assert wait_until(first.running, 10)
    rest = [ex.submit(square, i) for i in range(20)]
    ex.shutdown(wait=wait, cancel_futures=True)
    assert first.result(timeout=30) == "first"
    cancelled = [f for f in rest if f.cancelled()]
    assert len(cancelled) >= 15     # a few may already sit in the call queue
    for f in rest:
        if not f.cancelled():
            assert f.result(timeout=30) in [i * i for i in range(20)]
        else:
            with pytest.raises(CancelledError):
                f.result(timeout=0)
    ex.shutdown(wait=True)


def test_context_manager_joins_workers(impl):
    with ProcessPoolExecutor(3, mp_context=impl.ctx) as ex:
        assert sum(ex.map(square, range(10))) == 285
        processes = list(ex._processes.values())
    assert processes and all(p.exitcode == 0 for p in processes)


def test_result_queue_reader(impl):
    """What the executor's manager thread does with ctx.SimpleQueue()."""
    import multiprocessing.connection

    q = impl.ctx.SimpleQueue()
    try:
        q.put("early")              # before anyone watched: readable all the same
        reader = q._reader
        assert reader is q._reader
        assert multiprocessing.connection.wait([reader], timeout=10) == [reader]
        assert reader.recv() == "early"
        assert multiprocessing.connection.wait([reader], timeout=0) == []
        p = impl.ctx.Process(target=_put_items, args=(q, ["a", ("b", 2), None]))
        p.start()
        try:
            got = []
            while len(got) < 3:
                assert multiprocessing.connection.wait([reader, p.sentinel], timeout=30)
                if reader.poll():
                    got.append(reader.recv())
            assert got == ["a", ("b", 2), None]
            assert multiprocessing.connection.wait([reader], timeout=0) == []
            assert not reader.poll(0.01)
        finally:
            p.join(30)
        assert p.exitcode == 0
    finally:
        q.close()
    assert reader.closed
    with pytest.raises(OSError):
        reader.recv()


def _put_items(q, items):
    for item in items:
        q.put(item)
