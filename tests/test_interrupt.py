"""Ctrl+C during blocking calls, and timeouts.

Ctrl+C: a fresh `python -c` process blocks in a call and receives SIGINT; it
must raise KeyboardInterrupt promptly.  SIGINT is only ever sent to that
subprocess, never to the pytest process.

Timeouts: a timed wait returns when its time is up (lower bound asserted
tightly, upper bound generously) and a signal arriving meanwhile neither
lengthens nor cuts it short.

Both run against multiprocessing and cproc (fixture ``mp``).
"""

import signal
import threading
import time
from threading import BrokenBarrierError

import pytest

from helpers.blocking import wait_blocked
from helpers.children import FORK, ChildSet, ThreadTask
from helpers.scripts import CTRL_C_SCRIPT, assert_sigint_interrupts, read_line, spawn_script

pytestmark = pytest.mark.timeout(30)

# --------------------------------------------------------------------------
# Ctrl+C

PRELUDE = r"""
import os, sys, time

def holder(obj, times=1):
    # a forked process holds obj until this process exits
    r, w = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(times):
                obj.acquire()
            os.write(w, b'1')
            while os.getppid() == parent:
                time.sleep(0.05)
        finally:
            os._exit(0)
    os.read(r, 1)
    return pid

"""

# name: (setup, blocking call, expression printed after the interrupt, its expected repr)
BLOCKING_CASES = {
    "Lock.acquire": ("obj = m.Lock(); holder(obj)", "obj.acquire()", "obj.acquire(False)", "False"),
    "Lock.acquire(timeout)": ("obj = m.Lock(); holder(obj)", "obj.acquire(timeout=60)", "obj.acquire(False)", "False"),
    "RLock.acquire": ("obj = m.RLock(); holder(obj, 2)", "obj.acquire()", "obj.acquire(False)", "False"),
    "Semaphore.acquire": ("obj = m.Semaphore(0)", "obj.acquire()", "obj.get_value()", "0"),
    "BoundedSemaphore.acquire(timeout)": (
        "obj = m.BoundedSemaphore(1); obj.acquire()",
        "obj.acquire(True, 60)",
        "obj.get_value()",
        "0",
    ),
    "Event.wait": ("obj = m.Event()", "obj.wait()", "obj.is_set()", "False"),
    "Event.wait(timeout)": ("obj = m.Event()", "obj.wait(60)", "obj.is_set()", "False"),
    "Condition.wait": ("obj = m.Condition(); obj.acquire()", "obj.wait()", "1", "1"),
    "Condition.wait_for": ("obj = m.Condition(); obj.acquire()", "obj.wait_for(lambda: False)", "1", "1"),
    "Barrier.wait": ("obj = m.Barrier(2)", "obj.wait()", "obj.parties", "2"),
    "Value.get_lock.acquire": (
        "obj = m.Value('i', 0); holder(obj.get_lock())",
        "obj.get_lock().acquire()",
        "obj.get_lock().acquire(False)",
        "False",
    ),
}


@pytest.mark.parametrize("case", list(BLOCKING_CASES))
def test_ctrl_c_interrupts_blocking_call(mp, case):
    setup, call, post, expected_post = BLOCKING_CASES[case]
    body = PRELUDE + setup + "\n" + CTRL_C_SCRIPT.format(call=call, post=post)
    with spawn_script(mp.name, body) as proc:
        try:
            line = read_line(proc.stdout, 20)
            assert line == "ready", f"script did not get ready: {line!r}; stderr: {proc.stderr.read()!r}"
            assert_sigint_interrupts(proc, expected_post, line_timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_ctrl_c_uncaught_exits_like_python(mp):
    """Uncaught, the KeyboardInterrupt ends the process the usual way (-SIGINT)."""
    body = "e = m.Event()\nimport sys\nsys.stdout.write('ready\\n'); sys.stdout.flush()\ne.wait()\n"
    with spawn_script(mp.name, body) as proc:
        try:
            assert read_line(proc.stdout, 20) == "ready"
            wait_blocked(proc)
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == -signal.SIGINT
            assert b"KeyboardInterrupt" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------
# timeouts


def _timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t0


def _assert_waited(elapsed, timeout=0.2):
    assert elapsed >= timeout - 0.01, f"returned after {elapsed:.3f}s, before the {timeout}s timeout"
    assert elapsed < 2.0, f"returned after {elapsed:.3f}s for a {timeout}s timeout"


def test_lock_acquire_timeout(mp):
    lock = mp.Lock()
    lock.acquire()
    result, elapsed = _timed(lock.acquire, timeout=0.2)
    assert result is False
    _assert_waited(elapsed)
    result, elapsed = _timed(lock.acquire, True, 0.2)
    assert result is False
    _assert_waited(elapsed)
    lock.release()


def test_lock_acquire_timeout_held_by_other_process(mp):
    lock = mp.Lock()
    held, go = FORK.Event(), FORK.Event()

    def hold():
        with lock:
            held.set()
            go.wait(10)
        return True

    with ChildSet() as cs:
        child = cs.start(hold)
        assert held.wait(10)
        result, elapsed = _timed(lock.acquire, timeout=0.2)
        assert result is False
        _assert_waited(elapsed)
        go.set()
        assert child.result() is True
    assert lock.acquire(timeout=5) is True


def test_rlock_acquire_timeout_held_by_other_thread(mp):
    rlock = mp.RLock()
    held, go = threading.Event(), threading.Event()

    def hold():
        with rlock:
            held.set()
            go.wait(10)

    task = ThreadTask(hold)
    try:
        assert held.wait(10)
        result, elapsed = _timed(rlock.acquire, timeout=0.2)
        assert result is False
        _assert_waited(elapsed)
    finally:
        go.set()
        task.result(5)


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_acquire_timeout(mp, kind):
    sem = getattr(mp, kind)(1)
    sem.acquire()
    result, elapsed = _timed(sem.acquire, timeout=0.2)
    assert result is False
    _assert_waited(elapsed)
    assert sem.get_value() == 0


def test_event_wait_timeout(mp):
    ev = mp.Event()
    result, elapsed = _timed(ev.wait, 0.2)
    assert result is False
    _assert_waited(elapsed)
    result, elapsed = _timed(ev.wait, timeout=0.2)
    assert result is False
    _assert_waited(elapsed)


def test_condition_wait_timeouts(mp):
    cond = mp.Condition()
    with cond:
        result, elapsed = _timed(cond.wait, 0.2)
        assert result is False
        _assert_waited(elapsed)
        result, elapsed = _timed(cond.wait_for, lambda: False, 0.2)
        assert result is False
        _assert_waited(elapsed)


def test_barrier_wait_timeout(mp):
    b = mp.Barrier(2)
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        b.wait(timeout=0.2)
    _assert_waited(time.monotonic() - t0)
    assert b.broken is True
    b2 = mp.Barrier(2, timeout=0.2)
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        b2.wait()
    _assert_waited(time.monotonic() - t0)


def test_zero_and_negative_timeouts_do_not_wait(mp):
    lock = mp.Lock()
    lock.acquire()
    sem = mp.Semaphore(0)
    ev = mp.Event()
    for fn, args in [
        (lock.acquire, (True, 0)),
        (lock.acquire, (True, -1)),
        (sem.acquire, (True, 0)),
        (sem.acquire, (True, -5)),
        (ev.wait, (0,)),
        (ev.wait, (-1,)),
    ]:
        result, elapsed = _timed(fn, *args)
        assert result is False
        assert elapsed < 1.0


def test_timeout_not_extended_by_signals(mp):
    """Signals during a timed wait run their handler and the wait goes on
    for the time left only (no restart of the full timeout)."""
    lock = mp.Lock()
    lock.acquire()
    handled = []
    old = signal.signal(signal.SIGUSR1, lambda *a: handled.append(time.monotonic()))
    stop = threading.Event()
    main = threading.main_thread().ident

    def pester():
        deadline = time.monotonic() + 2.5
        while not stop.wait(0.05) and time.monotonic() < deadline:
            signal.pthread_kill(main, signal.SIGUSR1)

    sender = threading.Thread(target=pester, daemon=True)
    try:
        sender.start()
        t0 = time.monotonic()
        result = lock.acquire(timeout=0.5)
        t1 = time.monotonic()
    finally:
        stop.set()
        sender.join(5)
        signal.signal(signal.SIGUSR1, old)
    assert result is False
    assert t1 - t0 >= 0.49
    assert t1 - t0 < 1.5, f"a 0.5s timeout lasted {t1 - t0:.2f}s under signals"
    # the handler ran while the call was still waiting, not only after it
    assert any(h < t1 - 0.1 for h in handled), "signal handlers did not run during the wait"


# --------------------------------------------------------------------------
# waits release the GIL

GIL_CASES = {
    "Lock.acquire": ("obj = mp.Lock(); obj.acquire()", "obj.acquire(True, 5)", "obj.release()"),
    "RLock.acquire": ("obj = mp.RLock(); obj.acquire()", "obj.acquire(True, 5)", "obj.release()"),
    "Semaphore.acquire": ("obj = mp.Semaphore(0)", "obj.acquire(True, 5)", "obj.release()"),
    "Event.wait": ("obj = mp.Event()", "obj.wait(5)", "obj.set()"),
    "Condition.wait": ("obj = mp.Condition()", "obj.acquire() and obj.wait(5)", "obj.acquire(); obj.notify(); obj.release()"),
    "Barrier.wait": ("obj = mp.Barrier(2)", "obj.wait(5)", "obj.wait(5)"),
}


@pytest.mark.parametrize("case", list(GIL_CASES))
def test_blocked_wait_lets_other_threads_run(mp, case):
    setup, call, finish = GIL_CASES[case]
    ns = {"mp": mp, "ThreadTask": ThreadTask}
    exec(setup, ns)  # noqa: S102
    task = ThreadTask(lambda: eval(call, ns))  # noqa: S307
    wait_blocked(task)
    assert task.is_alive()
    spins = 0
    t_end = time.monotonic() + 0.3
    while time.monotonic() < t_end:
        spins += 1
    assert spins > 10000, f"main thread starved ({spins} spins) while another thread waited"
    assert task.is_alive()  # still waiting all along
    exec(finish, ns)  # noqa: S102
    result = task.result(10)
    assert result in (0, 1) if case == "Barrier.wait" else result is True
