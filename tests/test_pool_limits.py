"""cproc.Pool's limits, beyond multiprocessing: task_timeout (hard: the
worker is killed and replaced, the task fails with cproc.TaskTimeoutError),
soft_task_timeout (cproc.SoftTimeLimitExceeded raised inside the task) and
max_memory_per_child (a worker past it retires after its task; no task is
lost). Limits count from the moment a worker starts the task. With no limits
set the pool is multiprocessing's (tests/test_pool.py).
"""

import os
import pickle
import signal
import time

import multiprocessing
import pytest

from helpers.blocking import pid_gone, wait_until


def stuck(seconds=60):
    time.sleep(seconds)
    return "finished"


def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return seconds


def square(x):
    return x * x


def pid_after(seconds):
    time.sleep(seconds)
    return os.getpid()


def clean_up(path):
    """Sleeps past its soft limit, cleans up when told, returns."""
    try:
        time.sleep(30)
    except Exception as e:
        with open(path, "w") as f:
            f.write(type(e).__name__)
        return "cleaned up"
    return "not interrupted"


def ignore_soft_limit(path):
    try:
        time.sleep(30)
    except Exception as e:
        with open(path, "w") as f:
            f.write(type(e).__name__)
    time.sleep(30)


def alarm_handler(_):
    h = signal.getsignal(signal.SIGALRM)
    return getattr(h, "__module__", None), getattr(h, "__qualname__", repr(h))


_HOG = []


def hog(megabytes):
    _HOG.append(b"\1" * (megabytes << 20))     # written: resident
    return os.getpid()


def rss(_=None):
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE")


def test_a_stuck_task_is_killed_at_its_limit_and_the_pool_goes_on(cproc):
    with cproc.Pool(2, task_timeout=0.5) as pool:
        before = {w.pid for w in pool._pool}
        start = time.monotonic()
        r = pool.apply_async(stuck)
        others = pool.map_async(square, range(100), chunksize=1)
        with pytest.raises(cproc.TaskTimeoutError) as info:
            r.get(timeout=10)
        elapsed = time.monotonic() - start
        e = info.value
        assert isinstance(e, multiprocessing.TimeoutError)
        assert 0.5 <= elapsed < 3, elapsed
        assert e.pid in before and e.timeout == 0.5
        assert str(e) == ("Task exceeded its time limit (0.5s): worker process %d was killed and replaced"
                          % e.pid)
        assert others.get(timeout=10) == [x * x for x in range(100)]
        assert wait_until(lambda: pid_gone(e.pid), timeout=5)
        assert wait_until(lambda: len(pool._pool) == 2 and e.pid not in {w.pid for w in pool._pool}, timeout=5)
        assert pool.apply(square, (7,)) == 49


def test_the_limit_counts_from_the_start_of_the_task(cproc):
    # One worker, three tasks of 0.4 s under a 1 s limit: the last ends 1.2 s after submission.
    with cproc.Pool(1, task_timeout=1) as pool:
        results = [pool.apply_async(pid_after, (0.4,)) for _ in range(3)]
        pids = {r.get(timeout=10) for r in results}
        assert len(pids) == 1


def test_a_busy_loop_is_killed_too(cproc):
    with cproc.Pool(1) as pool:
        with pytest.raises(cproc.TaskTimeoutError):
            pool.apply(spin, (30,), task_timeout=0.3)
        assert pool.apply(square, (3,)) == 9


def test_a_call_overrides_the_pools_limits(cproc):
    with cproc.Pool(1, task_timeout=0.2) as pool:
        assert pool.apply(pid_after, (0.5,), task_timeout=None) > 0
        assert pool.apply(pid_after, (0.5,), task_timeout=5) > 0
        with pytest.raises(cproc.TaskTimeoutError):
            pool.apply(stuck)
    with cproc.Pool(1) as pool:
        with pytest.raises(cproc.TaskTimeoutError) as info:
            pool.starmap(stuck, [(60,)], task_timeout=0.2)
        assert info.value.timeout == 0.2


def test_map_and_imap_fail_only_the_stuck_task(cproc):
    with cproc.Pool(2) as pool:
        r = pool.map_async(stuck, [0, 60, 0, 0], chunksize=1, task_timeout=0.3)
        with pytest.raises(cproc.TaskTimeoutError):
            r.get(timeout=10)
        it = pool.imap(stuck, [0, 60, 0.01, 0], task_timeout=0.3)
        assert next(it) == "finished"
        with pytest.raises(cproc.TaskTimeoutError):
            it.next(timeout=10)
        assert list(it) == ["finished", "finished"]
        out = list(pool.imap_unordered(square, range(10), chunksize=3, task_timeout=5))
        assert sorted(out) == [x * x for x in range(10)]


def test_tasks_ending_at_their_limit_either_succeed_or_time_out(cproc):
    # The collector claims a task as its worker finishes it: that worker must
    # not take (and lose) another task. Nothing here may be WorkerLostError.
    durations = [0.03 + 0.002 * (i % 11) for i in range(60)]
    with cproc.Pool(2, task_timeout=0.04) as pool:
        results = [pool.apply_async(stuck, (d,)) for d in durations]
        outcomes = []
        for r in results:
            try:
                outcomes.append(r.get(timeout=20))
            except cproc.TaskTimeoutError:
                outcomes.append("timeout")
        assert set(outcomes) <= {"finished", "timeout"}
        assert "finished" in outcomes and "timeout" in outcomes
        assert pool.map(square, range(20)) == [x * x for x in range(20)]


def test_the_soft_limit_lets_the_task_clean_up(cproc, tmp_path):
    path = str(tmp_path / "cleaned")
    with cproc.Pool(1, soft_task_timeout=0.2) as pool:
        start = time.monotonic()
        assert pool.apply(clean_up, (path,)) == "cleaned up"
        assert time.monotonic() - start < 5
        with open(path) as f:
            assert f.read() == "SoftTimeLimitExceeded"
        with pytest.raises(cproc.SoftTimeLimitExceeded):    # not caught: the task fails with it
            pool.apply(stuck)
        # A task that ends in time is not interrupted, now or later.
        assert pool.map(pid_after, [0.01] * 4, chunksize=1) == [pool.apply(os.getpid)] * 4
        time.sleep(0.3)
        assert pool.apply(square, (5,), soft_task_timeout=None) == 25


def test_a_task_that_ignores_its_soft_limit_is_killed_at_the_hard_one(cproc, tmp_path):
    path = str(tmp_path / "told")
    with cproc.Pool(1, soft_task_timeout=0.2, task_timeout=0.6) as pool:
        start = time.monotonic()
        with pytest.raises(cproc.TaskTimeoutError):
            pool.apply(ignore_soft_limit, (path,))
        assert 0.6 <= time.monotonic() - start < 5
        with open(path) as f:
            assert f.read() == "SoftTimeLimitExceeded"


def test_no_soft_limit_leaves_sigalrm_alone(cproc):
    with cproc.Pool(1, task_timeout=5) as pool:
        assert pool.apply(alarm_handler, (0,)) != ("cproc.pool", "_soft_limit")
        assert pool.apply(alarm_handler, (0,), soft_task_timeout=5) == ("cproc.pool", "_soft_limit")


def test_the_errors_pickle():
    import cproc
    e = pickle.loads(pickle.dumps(cproc.TaskTimeoutError("m", 12, 0.5)))
    assert (type(e), str(e), e.pid, e.timeout) == (cproc.TaskTimeoutError, "m", 12, 0.5)
    assert issubclass(cproc.SoftTimeLimitExceeded, Exception)


@pytest.mark.parametrize("kw", ["task_timeout", "soft_task_timeout"])
@pytest.mark.parametrize("value", [0, -1, "1", True, float("nan")])
def test_a_limit_must_be_a_positive_number(cproc, kw, value):
    with pytest.raises(ValueError, match=kw):
        cproc.Pool(1, **{kw: value})
    with cproc.Pool(1) as pool:
        with pytest.raises(ValueError, match=kw):
            pool.apply_async(square, (1,), **{kw: value})


@pytest.mark.parametrize("value", [0, -1, 1.5, "1"])
def test_max_memory_must_be_a_positive_int(cproc, value):
    with pytest.raises(ValueError, match="max_memory_per_child"):
        cproc.Pool(1, max_memory_per_child=value)


def test_a_memory_hog_is_recycled_and_no_task_is_lost(cproc):
    with cproc.Pool(1) as pool:
        baseline = pool.apply(rss)
    with cproc.Pool(1, max_memory_per_child=baseline + (40 << 20)) as pool:
        small = [pool.apply(os.getpid) for _ in range(3)]
        assert len(set(small)) == 1        # under the limit: the same worker
        pids = pool.map(hog, [24] * 6, chunksize=1)
        # Each worker passes the limit on its second hog (48 MB), then retires.
        assert len(set(pids)) >= 3
        assert all(pids.count(p) <= 2 for p in pids)
        assert pool.apply(square, (4,)) == 16
        assert wait_until(lambda: all(pid_gone(p) for p in set(pids) | set(small)), timeout=10)


def sleep_or_soft(seconds):
    try:
        time.sleep(seconds)
    except Exception as e:
        return type(e).__name__
    return "finished"


def test_tasks_ending_at_their_soft_limit_and_the_tasks_after_them(cproc):
    # The collector's SIGALRM may land just after the task it was meant for
    # ended: it must not interrupt the next task (these have no soft limit).
    durations = [0.03 + 0.002 * (i % 11) for i in range(40)]
    with cproc.Pool(2, soft_task_timeout=0.04) as pool:
        results = [pool.apply_async(sleep_or_soft, (d,)) for d in durations]
        after = [pool.apply_async(sleep_or_soft, (0.002,), soft_task_timeout=None) for _ in range(200)]
        outcomes = [r.get(timeout=20) for r in results]
        assert set(outcomes) <= {"finished", "SoftTimeLimitExceeded"}
        assert "SoftTimeLimitExceeded" in outcomes
        assert [r.get(timeout=20) for r in after] == ["finished"] * 200
