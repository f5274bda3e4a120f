"""The suite's own instrument: wait_blocked (tests/helpers/blocking.py) must
tell a thread or process asleep in a blocking call from one that runs, has
ended, or only waits for the GIL, so that "then it is still blocked" in the
other tests means something."""

import os
import threading

import pytest

from helpers.blocking import blocked_in, wait_blocked, wait_until
from helpers.children import FORK, ChildSet, ThreadTask

pytestmark = pytest.mark.timeout(30)


def test_a_thread_in_a_shared_futex_wait_is_blocked():
    sem = FORK.Semaphore(0)  # process-shared: a shared futex
    task = ThreadTask(sem.acquire, True, 20)
    wait_blocked(task, wchan="futex")
    assert task.is_alive()
    sem.release()
    assert task.result(5) is True


def test_a_thread_reading_an_empty_pipe_is_blocked():
    r, w = os.pipe()
    try:
        task = ThreadTask(os.read, r, 1)
        wait_blocked(task)
        assert "pipe" in blocked_in(os.getpid(), task.thread.native_id)
        os.write(w, b"x")
        assert task.result(5) == b"x"
    finally:
        os.close(r)
        os.close(w)


def test_a_thread_that_returns_is_not_blocked():
    task = ThreadTask(sum, [1, 2])
    with pytest.raises(AssertionError, match="ended instead of blocking"):
        wait_blocked(task)


def test_a_running_thread_is_not_blocked():
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    task = ThreadTask(spin)
    try:
        with pytest.raises(AssertionError, match="did not block within"):
            wait_blocked(task, timeout=0.3)
    finally:
        stop.set()
        task.result(5)


def test_a_private_futex_wait_does_not_count():
    """threading.Lock waits on a process-private futex, as a thread waiting
    for the GIL does: not counted, so a thread that has not got into its call
    yet (or is on its way out) is never taken for a blocked one."""
    lock = threading.Lock()
    lock.acquire()
    task = ThreadTask(lock.acquire, True, 20)
    try:
        with pytest.raises(AssertionError, match="did not block within"):
            wait_blocked(task, timeout=0.3)
    finally:
        lock.release()
    assert task.result(5) is True


def test_a_child_process_in_a_futex_wait_is_blocked():
    ev = FORK.Event()
    with ChildSet() as cs:
        child = cs.start(ev.wait, 20)
        wait_blocked(child, wchan="futex")
        assert not child.reported()
        ev.set()
        assert child.result(5) is True


def test_a_child_process_that_exits_is_not_blocked():
    with ChildSet() as cs:
        child = cs.start(os.getpid)
        assert wait_until(lambda: child.reported(), 10)
        with pytest.raises(AssertionError, match="ended instead of blocking"):
            wait_blocked(child, timeout=5)
