"""Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier.

Differential tests run once against multiprocessing (fork context) and once
against cproc (fixture ``mp``), asserting the behaviour measured on
multiprocessing 3.11.  Tests of cproc's own choices use the ``cproc`` fixture.
"""

import os
import re
import sys
import time
from threading import BrokenBarrierError

import pytest

import threading

from helpers.blocking import wait_blocked, wait_until
from helpers.children import FORK, ChildSet, SharedInts, ThreadTask

pytestmark = pytest.mark.timeout(30)

RELEASED_TOO_MANY = "semaphore or lock released too many times"
RLOCK_NOT_OWNED = "attempt to release recursive lock not owned by thread"


def blocked(child, duration=0.3):
    """True if the child has not reported after `duration` (it is blocked)."""
    return not child.reported(duration)


# ==========================================================================
# Lock


def test_lock_acquire_release(mp):
    lock = mp.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(block=False) is False
    assert lock.acquire(timeout=0) is False
    assert lock.acquire(True, 0) is False
    lock.release()
    assert lock.acquire(False) is True
    lock.release()
    assert lock.acquire(block=True, timeout=None) is True
    lock.release()


def test_lock_is_not_reentrant(mp):
    lock = mp.Lock()
    with lock:
        assert lock.acquire(timeout=0.05) is False


def test_lock_context_manager(mp):
    lock = mp.Lock()
    with lock as entered:
        assert entered is True
        assert lock.acquire(False) is False
    assert lock.acquire(False) is True
    lock.release()


def test_lock_context_manager_releases_on_exception(mp):
    lock = mp.Lock()
    with pytest.raises(KeyError):
        with lock:
            raise KeyError("x")
    assert lock.acquire(False) is True
    lock.release()


def test_lock_release_unheld_raises(mp):
    lock = mp.Lock()
    with pytest.raises(ValueError) as ei:
        lock.release()
    assert str(ei.value) == RELEASED_TOO_MANY
    lock.acquire()
    lock.release()
    with pytest.raises(ValueError) as ei:
        lock.release()
    assert str(ei.value) == RELEASED_TOO_MANY


def test_lock_bad_timeout_type(mp):
    lock = mp.Lock()
    with pytest.raises(TypeError) as ei:
        lock.acquire(True, "x")
    assert str(ei.value) == "must be real number, not str"
    with pytest.raises(TypeError) as ei:
        lock.acquire(timeout="x")
    assert str(ei.value) == "must be real number, not str"
    # the failed calls did not take the lock
    assert lock.acquire(False) is True
    lock.release()


def test_lock_negative_timeout_means_zero(mp):
    lock = mp.Lock()
    assert lock.acquire(timeout=-1) is True  # free: taken at once
    t0 = time.monotonic()
    assert lock.acquire(timeout=-1) is False  # held: no wait, no error
    assert time.monotonic() - t0 < 1.0
    lock.release()


def test_lock_nonblocking_ignores_timeout(mp):
    lock = mp.Lock()
    lock.acquire()
    t0 = time.monotonic()
    assert lock.acquire(False, 5) is False
    assert time.monotonic() - t0 < 1.0
    lock.release()


def test_lock_released_by_another_thread(mp):
    lock = mp.Lock()
    lock.acquire()
    ThreadTask(lock.release).result()
    assert lock.acquire(False) is True
    lock.release()


def test_lock_released_by_another_process(mp):
    lock = mp.Lock()
    lock.acquire()
    with ChildSet() as cs:
        cs.start(lock.release).result()
    assert lock.acquire(False) is True
    lock.release()


def test_lock_repr(mp):
    lock = mp.Lock()
    assert repr(lock) == "<Lock(owner=None)>"
    with lock:
        assert repr(lock) == "<Lock(owner=MainProcess)>"
        # seen from another thread of the same process
        assert ThreadTask(repr, lock).result() == "<Lock(owner=SomeOtherThread)>"
    assert repr(lock) == "<Lock(owner=None)>"


def test_lock_repr_in_named_thread(mp):
    lock = mp.Lock()

    def inner():
        with lock:
            return repr(lock)

    assert ThreadTask(inner, name="worker").result() == "<Lock(owner=MainProcess|worker)>"


def _hold_until(lock, held, go):
    """Child body: take lock, say so, keep it until told, release it."""
    lock.acquire()
    held.set()
    go.wait(10)
    lock.release()
    return True


def test_lock_repr_held_by_other_process(mp):
    lock = mp.Lock()
    held, go = FORK.Event(), FORK.Event()
    with ChildSet() as cs:
        child = cs.start(_hold_until, lock, held, go)
        assert held.wait(10)
        assert repr(lock) == "<Lock(owner=SomeOtherProcess)>"
        assert lock.acquire(False) is False
        go.set()
        assert child.result() is True
    assert repr(lock) == "<Lock(owner=None)>"


def test_isinstance_of_synchronize_classes(mp):
    s = mp.synchronize
    assert isinstance(mp.Lock(), s.Lock)
    assert isinstance(mp.RLock(), s.RLock)
    assert isinstance(mp.Semaphore(), s.Semaphore)
    assert isinstance(mp.BoundedSemaphore(), s.BoundedSemaphore)
    assert isinstance(mp.BoundedSemaphore(), s.Semaphore)
    assert isinstance(mp.Event(), s.Event)
    assert isinstance(mp.Condition(), s.Condition)
    assert isinstance(mp.Barrier(2), s.Barrier)


# ==========================================================================
# RLock


def test_rlock_is_reentrant_and_counts(mp):
    rlock = mp.RLock()
    assert repr(rlock) == "<RLock(None, 0)>"
    assert rlock.acquire() is True
    assert rlock.acquire() is True
    assert rlock.acquire(False) is True
    assert repr(rlock) == "<RLock(MainProcess, 3)>"
    rlock.release()
    assert repr(rlock) == "<RLock(MainProcess, 2)>"
    rlock.release()
    rlock.release()
    assert repr(rlock) == "<RLock(None, 0)>"
    with pytest.raises(AssertionError) as ei:
        rlock.release()
    assert str(ei.value) == RLOCK_NOT_OWNED


def test_rlock_context_manager(mp):
    rlock = mp.RLock()
    with rlock as entered:
        assert entered is True
        with rlock:
            assert repr(rlock) == "<RLock(MainProcess, 2)>"
    assert repr(rlock) == "<RLock(None, 0)>"


def test_rlock_owned_by_thread(mp):
    rlock = mp.RLock()
    rlock.acquire()
    try:
        assert ThreadTask(rlock.acquire, False).result() is False
        assert ThreadTask(repr, rlock).result() == "<RLock(SomeOtherThread, nonzero)>"
        task = ThreadTask(rlock.release)
        task.join()
        assert isinstance(task.error, AssertionError)
        assert str(task.error) == RLOCK_NOT_OWNED
        assert repr(rlock) == "<RLock(MainProcess, 1)>"  # the failed release changed nothing
    finally:
        rlock.release()


def test_rlock_repr_in_named_thread(mp):
    rlock = mp.RLock()

    def inner():
        with rlock, rlock:
            return repr(rlock)

    assert ThreadTask(inner, name="worker").result() == "<RLock(MainProcess|worker, 2)>"


def test_rlock_owned_by_process(mp):
    rlock = mp.RLock()
    held, go = FORK.Event(), FORK.Event()
    with ChildSet() as cs:
        child = cs.start(_hold_until, rlock, held, go)
        assert held.wait(10)
        assert repr(rlock) == "<RLock(SomeOtherProcess, nonzero)>"
        assert rlock.acquire(False) is False
        with pytest.raises(AssertionError) as ei:
            rlock.release()
        assert str(ei.value) == RLOCK_NOT_OWNED
        go.set()
        assert child.result() is True
    assert rlock.acquire(timeout=5) is True
    rlock.release()


# ==========================================================================
# Semaphore, BoundedSemaphore


def test_semaphore_counts(mp):
    sem = mp.Semaphore(2)
    assert repr(sem) == "<Semaphore(value=2)>"
    assert sem.get_value() == 2
    assert sem.acquire() is True
    assert sem.acquire(timeout=1) is True
    assert sem.get_value() == 0
    assert sem.acquire(False) is False
    assert sem.acquire(timeout=0) is False
    for _ in range(3):
        sem.release()  # unbounded: may exceed the initial value
    assert sem.get_value() == 3
    assert repr(sem) == "<Semaphore(value=3)>"


def test_semaphore_default_and_keyword(mp):
    assert mp.Semaphore().get_value() == 1
    assert mp.Semaphore(value=3).get_value() == 3
    zero = mp.Semaphore(0)
    assert zero.get_value() == 0
    assert zero.acquire(False) is False
    assert mp.BoundedSemaphore().get_value() == 1
    assert mp.BoundedSemaphore(value=4).get_value() == 4


def test_semaphore_context_manager(mp):
    sem = mp.Semaphore(1)
    with sem as entered:
        assert entered is True
        assert sem.get_value() == 0
    assert sem.get_value() == 1


@pytest.mark.parametrize("bad", ["a", 1.5, None])
def test_semaphore_bad_value_type(mp, bad):
    with pytest.raises(TypeError):
        mp.Semaphore(bad)
    with pytest.raises(TypeError):
        mp.BoundedSemaphore(bad)


def test_semaphore_negative_value_cproc(cproc):
    for factory in (cproc.Semaphore, cproc.BoundedSemaphore):
        with pytest.raises(ValueError) as ei:
            factory(-1)
        assert str(ei.value) == "semaphore initial value must be >= 0"


def test_bounded_semaphore(mp):
    sem = mp.BoundedSemaphore(2)
    assert repr(sem) == "<BoundedSemaphore(value=2, maxvalue=2)>"
    with pytest.raises(ValueError) as ei:
        sem.release()
    assert str(ei.value) == RELEASED_TOO_MANY
    assert sem.get_value() == 2
    sem.acquire()
    sem.acquire()
    assert repr(sem) == "<BoundedSemaphore(value=0, maxvalue=2)>"
    assert sem.acquire(False) is False
    sem.release()
    sem.release()
    with pytest.raises(ValueError) as ei:
        sem.release()
    assert str(ei.value) == RELEASED_TOO_MANY
    assert repr(sem) == "<BoundedSemaphore(value=2, maxvalue=2)>"


def test_bounded_semaphore_default(mp):
    sem = mp.BoundedSemaphore()
    assert repr(sem) == "<BoundedSemaphore(value=1, maxvalue=1)>"
    with pytest.raises(ValueError) as ei:
        sem.release()
    assert str(ei.value) == RELEASED_TOO_MANY


def test_semaphore_release_from_other_process_wakes_waiter(mp):
    sem = mp.Semaphore(0)
    with ChildSet() as cs:
        waiters = [cs.start(sem.acquire, True, 10) for _ in range(3)]
        wait_blocked(*waiters)
        assert not any(w.reported() for w in waiters)
        for _ in range(3):
            sem.release()
        assert [w.result(5) for w in waiters] == [True, True, True]
    assert sem.get_value() == 0


def test_semaphore_released_by_child_wakes_parent(mp):
    sem = mp.Semaphore(0)
    gate = FORK.Event()

    def releaser():
        gate.wait(10)
        sem.release()

    with ChildSet() as cs:
        cs.start(releaser)
        task = ThreadTask(sem.acquire, True, 10)
        wait_blocked(task)  # nothing to take yet
        assert task.is_alive()
        gate.set()
        assert task.result(5) is True


def test_bounded_semaphore_bound_is_shared(mp):
    sem = mp.BoundedSemaphore(1)
    sem.acquire()
    with ChildSet() as cs:
        cs.start(sem.release).result()
    assert sem.get_value() == 1
    with pytest.raises(ValueError):
        sem.release()


# ==========================================================================
# Event


def test_event_basics(mp):
    ev = mp.Event()
    assert ev.is_set() is False
    assert ev.wait(0) is False
    assert ev.wait(timeout=0.01) is False
    ev.set()
    assert ev.is_set() is True
    assert ev.wait() is True
    assert ev.wait(0) is True
    ev.set()  # idempotent
    assert ev.is_set() is True
    ev.clear()
    assert ev.is_set() is False
    assert ev.wait(0.01) is False


# 3.11 gave Event and Barrier (threading.Barrier's) their reprs; before, object's
OWN_REPRS = sys.version_info >= (3, 11)


def _repr_pattern(mp, cls, pattern):
    """pattern, or up to 3.10 object's default repr of <mp>.synchronize.<cls>."""
    return pattern if OWN_REPRS else rf"<{mp.name}\.synchronize\.{cls} object at 0x[0-9a-f]+>"


def test_event_repr(mp):
    ev = mp.Event()
    assert re.fullmatch(_repr_pattern(mp, "Event", r"<Event at 0x[0-9a-f]+ unset>"), repr(ev)), repr(ev)
    ev.set()
    assert re.fullmatch(_repr_pattern(mp, "Event", r"<Event at 0x[0-9a-f]+ set>"), repr(ev)), repr(ev)


def test_event_set_wakes_all_threads(mp):
    ev = mp.Event()
    tasks = [ThreadTask(ev.wait, 10) for _ in range(3)]
    wait_blocked(*tasks)
    assert all(t.is_alive() for t in tasks)
    ev.set()
    assert [t.result(5) for t in tasks] == [True, True, True]


def test_event_wakes_other_processes(mp):
    ev = mp.Event()
    with ChildSet() as cs:
        waiters = [cs.start(ev.wait, 10) for _ in range(2)]
        wait_blocked(*waiters)
        assert not any(w.reported() for w in waiters)
        ev.set()
        assert [w.result(5) for w in waiters] == [True, True]


def test_event_set_by_child_wakes_parent(mp):
    ev = mp.Event()
    gate = FORK.Event()

    def setter():
        gate.wait(10)
        ev.set()

    with ChildSet() as cs:
        cs.start(setter)
        task = ThreadTask(ev.wait, 10)
        wait_blocked(task)
        assert task.is_alive()
        gate.set()
        assert task.result(5) is True
    assert ev.is_set() is True


def test_event_clear_seen_by_child(mp):
    ev = mp.Event()
    ev.set()
    with ChildSet() as cs:
        cs.start(ev.clear).result()
    assert ev.is_set() is False


# ==========================================================================
# Condition


def test_condition_repr(mp):
    cond = mp.Condition()
    assert repr(cond) == "<Condition(<RLock(None, 0)>, 0)>"
    with cond:
        assert repr(cond) == "<Condition(<RLock(MainProcess, 1)>, 0)>"
    lock_cond = mp.Condition(mp.Lock())
    assert repr(lock_cond) == "<Condition(<Lock(owner=None)>, 0)>"


def test_condition_repr_counts_waiters(mp):
    cond = mp.Condition()

    def waiter():
        with cond:
            return cond.wait(10)

    task = ThreadTask(waiter)
    assert wait_until(lambda: repr(cond) == "<Condition(<RLock(None, 0)>, 1)>", 5), repr(cond)
    with cond:
        cond.notify()
    assert task.result(5) is True
    assert repr(cond) == "<Condition(<RLock(None, 0)>, 0)>"


def test_condition_acquire_release(mp):
    cond = mp.Condition()
    assert cond.acquire() is True
    assert cond.acquire(False) is True  # RLock by default
    cond.release()
    cond.release()
    with pytest.raises(AssertionError):
        cond.release()
    lock = mp.Lock()
    cond = mp.Condition(lock)
    with lock:
        assert cond.acquire(False) is False  # the condition uses the given lock
        assert cond.acquire(timeout=0) is False
    with cond as entered:
        assert entered is True
        assert lock.acquire(False) is False


def test_condition_misuse_messages(mp):
    cond = mp.Condition()
    with pytest.raises(AssertionError) as ei:
        cond.wait()
    assert str(ei.value) == "must acquire() condition before using wait()"
    with pytest.raises(AssertionError) as ei:
        cond.wait_for(lambda: False, 0.01)
    assert str(ei.value) == "must acquire() condition before using wait()"
    with pytest.raises(AssertionError) as ei:
        cond.notify()
    assert str(ei.value) == "lock is not owned"
    with pytest.raises(AssertionError) as ei:
        cond.notify_all()
    assert str(ei.value) == "lock is not owned"


def test_condition_misuse_from_other_thread(mp):
    cond = mp.Condition()
    with cond:
        task = ThreadTask(cond.notify)
        task.join()
        assert isinstance(task.error, AssertionError)
        assert str(task.error) == "lock is not owned"


def test_condition_wait_timeout_returns_false(mp):
    cond = mp.Condition()
    with cond:
        assert cond.wait(0.05) is False
        assert cond.wait(timeout=0) is False
        assert repr(cond) == "<Condition(<RLock(MainProcess, 1)>, 0)>"  # lock re-taken


def test_condition_notify_without_waiters_is_not_remembered(mp):
    cond = mp.Condition()
    with cond:
        cond.notify()
        cond.notify_all()
    with cond:
        assert cond.wait(0.1) is False


def test_condition_wait_releases_all_recursion_levels(mp):
    cond = mp.Condition()
    got_in = []

    def notifier():
        with cond:  # only possible if wait() released both levels
            got_in.append(True)
            cond.notify()

    cond.acquire()
    cond.acquire()
    try:
        task = ThreadTask(notifier)
        assert cond.wait(10) is True
        assert got_in == [True]
        assert repr(cond) == "<Condition(<RLock(MainProcess, 2)>, 0)>"  # both levels restored
        task.result(5)
    finally:
        cond.release()
        cond.release()
    assert repr(cond) == "<Condition(<RLock(None, 0)>, 0)>"


def test_condition_wait_for(mp):
    cond = mp.Condition()
    marker = []
    with cond:
        # already true: returns the predicate's value without waiting
        assert cond.wait_for(lambda: 42, timeout=0) == 42
        # never true: returns the predicate's last (falsy) value after the timeout
        assert cond.wait_for(lambda: marker, timeout=0.05) is marker
    state = SharedInts(1)
    me = threading.current_thread()

    def setter():
        wait_blocked(me)  # in wait_for, so that it has to be woken
        with cond:
            state[0] = 7
            cond.notify_all()

    task = ThreadTask(setter)
    with cond:
        assert cond.wait_for(lambda: state[0] == 7, timeout=10) is True
    task.result(5)


def _notify_n_scenario(mp, cond, counters, waiters, notify, n=2):
    """waiters (ThreadTasks or Children) are started; counters[0]=ready,
    counters[1]=woken.  notify() wakes n of them; the others sleep on (a
    wrongly woken one would end instead: wait_blocked fails then)."""
    assert wait_until(lambda: _locked_read(cond, counters, 0) == len(waiters), 10), "waiters never got ready"
    wait_blocked(*waiters)
    with cond:
        notify()
    assert wait_until(lambda: counters[1] >= n, 5), f"only {counters[1]} woke"
    assert wait_until(lambda: sum(map(_ended, waiters)) >= n, 5)
    wait_blocked(*[w for w in waiters if not _ended(w)])
    assert counters[1] == n
    with cond:
        cond.notify_all()


def _ended(waiter):
    """A ThreadTask's thread or a Child's function has returned."""
    return waiter.reported() if hasattr(waiter, "reported") else not waiter.is_alive()


def _locked_read(cond, counters, i):
    with cond:
        return counters[i]


def _counting_waiter(cond, counters):
    """Wait on cond once: counters[0] counts the waiters ready, [1] the woken."""
    with cond:
        counters[0] += 1
        r = cond.wait(10)
        counters[1] += 1
        return r


@pytest.mark.parametrize("waiters, n", [(4, 2), (3, 1)], ids=["notify(2)", "notify()"])
def test_condition_notify_n_threads(mp, waiters, n):
    cond = mp.Condition()
    counters = SharedInts(2)
    tasks = [ThreadTask(_counting_waiter, cond, counters) for _ in range(waiters)]
    notify = cond.notify if n == 1 else lambda: cond.notify(n)  # notify(): its default n=1
    _notify_n_scenario(mp, cond, counters, tasks, notify, n)
    assert [t.result(5) for t in tasks] == [True] * waiters
    assert counters[1] == waiters


def test_condition_notify_n_processes(mp):
    cond = mp.Condition()
    counters = SharedInts(2)
    with ChildSet() as cs:
        children = [cs.start(_counting_waiter, cond, counters) for _ in range(4)]
        _notify_n_scenario(mp, cond, counters, children, lambda: cond.notify(2))
        assert [c.result(5) for c in children] == [True] * 4
    assert counters[1] == 4


def test_condition_notify_all_processes(mp):
    cond = mp.Condition(mp.Lock())
    state = SharedInts(2)

    def waiter():
        with cond:
            state[0] += 1
            return cond.wait_for(lambda: state[1] == 1, timeout=10)

    with ChildSet() as cs:
        children = [cs.start(waiter) for _ in range(3)]
        assert wait_until(lambda: _locked_read(cond, state, 0) == 3, 10)
        wait_blocked(*children)
        assert not any(c.reported() for c in children)
        with cond:
            state[1] = 1
            cond.notify_all()
        assert [c.result(5) for c in children] == [True] * 3


def test_condition_child_notifies_parent(mp):
    cond = mp.Condition()
    state = SharedInts(1)

    def notifier():
        with cond:
            state[0] = 1
            cond.notify()

    with cond:
        with ChildSet() as cs:
            cs.start(notifier)
            t0 = time.monotonic()
            assert cond.wait_for(lambda: state[0] == 1, timeout=10) is True
            assert time.monotonic() - t0 < 9
            cs.children[0].result(5)


# Who a notify() or a set() wakes: the waiters present at that moment, all
# of them, and no one who comes later (multiprocessing's semantics).


def _registered_waiter(cond, state, timeout):
    with cond:
        state[0] += 1
        return cond.wait(timeout)


def test_condition_notifier_does_not_steal_its_notify(mp):
    cond = mp.Condition()
    state = SharedInts(1)
    with ChildSet() as cs:
        for i in range(10):
            child = cs.start(_registered_waiter, cond, state, 30)
            assert wait_until(lambda: _locked_read(cond, state, 0) == i + 1, 10)
            with cond:
                cond.notify()
                assert cond.wait(0.05) is False   # the child's notification, not ours
            assert child.result(10) is True


def _ack_waiter(cond, state):
    with cond:
        state[0] += 1
        if not cond.wait_for(lambda: state[1] == 1, timeout=20):
            return "never notified"
        state[2] += 1
        cond.notify()
        return "acknowledged"


def test_condition_notify_all_then_replies_on_the_same_condition(mp):
    cond = mp.Condition()
    state = SharedInts(3)
    with ChildSet() as cs:
        children = [cs.start(_ack_waiter, cond, state) for _ in range(3)]
        assert wait_until(lambda: _locked_read(cond, state, 0) == 3, 10)
        with cond:
            state[1] = 1
            cond.notify_all()
            assert cond.wait_for(lambda: state[2] == 3, timeout=20) is True
        assert [c.result(10) for c in children] == ["acknowledged"] * 3


def test_condition_killed_waiter_does_not_pass_its_notification_on(cproc):
    """A waiter SIGKILLed in wait() may absorb a notify, but never hands it to
    a process that started waiting after the notify; the notifier does not
    hang (multiprocessing's notify() waits forever for the dead waiter)."""
    cond = cproc.Condition()
    state = SharedInts(1)
    with ChildSet() as cs:
        child = cs.start(_registered_waiter, cond, state, 30)
        assert wait_until(lambda: _locked_read(cond, state, 0) == 1, 10)
        wait_blocked(child.pid, wchan="futex")
        child.proc.kill()
        child.proc.join(10)
        with cond:
            cond.notify()
            assert cond.wait(0.1) is False
        live = cs.start(_registered_waiter, cond, state, 30)
        assert wait_until(lambda: _locked_read(cond, state, 0) == 2, 10)
        with cond:
            cond.notify()
        assert live.result(10) is True


def test_condition_notify_negative_wakes_nobody(mp):
    cond = mp.Condition()
    state = SharedInts(1)
    with ChildSet() as cs:
        child = cs.start(_registered_waiter, cond, state, 30)
        assert wait_until(lambda: _locked_read(cond, state, 0) == 1, 10)
        with cond:
            cond.notify(-1)
            cond.notify(0)
        wait_blocked(child.pid, wchan="futex")
        assert not child.reported()
        with cond:
            cond.notify(1)
        assert child.result(10) is True


def test_condition_over_a_thread_lock(mp):
    """Accepted, as any object with acquire()/release(); wait() and notify()
    need the lock's _semlock, as multiprocessing's."""
    lock = threading.Lock()
    cond = mp.Condition(lock)
    with cond:
        assert lock.locked()
        for call in (lambda: cond.wait(0.01), cond.notify):
            with pytest.raises(AttributeError) as ei:
                call()
            assert str(ei.value) == "'_thread.lock' object has no attribute '_semlock'"
    assert not lock.locked()


def test_event_pulse_wakes_every_sleeping_waiter(mp):
    """set() then clear() at once: every process already asleep in wait()
    wakes (its wait() returns the flag it then reads), none sleeps on."""
    ev = mp.Event()
    with ChildSet() as cs:
        children = [cs.start(ev.wait, 30) for _ in range(3)]
        for child in children:
            wait_blocked(child.pid, wchan="futex")
        ev.set()
        ev.clear()
        results = [child.result(10) for child in children]
    assert all(isinstance(r, bool) for r in results)


# ==========================================================================
# Barrier


def test_barrier_properties(mp):
    b = mp.Barrier(3)
    assert b.parties == 3
    assert b.n_waiting == 0
    assert b.broken is False
    pattern = _repr_pattern(mp, "Barrier", r"<[\w.]*Barrier at 0x[0-9a-f]+: waiters=0/3>")
    assert re.fullmatch(pattern, repr(b)), repr(b)


def test_barrier_bad_parties_cproc(cproc):
    for parties in (0, -1):
        with pytest.raises(ValueError) as ei:
            cproc.Barrier(parties)
        assert str(ei.value) == "parties must be >= 1"


def test_barrier_single_party(mp):
    calls = []
    b = mp.Barrier(1, action=lambda: calls.append(1))
    assert b.wait() == 0
    assert b.wait(timeout=1) == 0
    assert calls == [1, 1]


def test_barrier_threads_indices_and_reuse(mp):
    b = mp.Barrier(3)
    for _generation in range(3):
        tasks = [ThreadTask(b.wait, 10) for _ in range(3)]
        assert sorted(t.result(10) for t in tasks) == [0, 1, 2]
    assert b.n_waiting == 0
    assert b.broken is False


def test_barrier_n_waiting(mp):
    b = mp.Barrier(3)
    tasks = [ThreadTask(b.wait, 10) for _ in range(2)]
    assert wait_until(lambda: b.n_waiting == 2, 5), b.n_waiting
    assert all(t.is_alive() for t in tasks)
    pattern = _repr_pattern(mp, "Barrier", r"<[\w.]*Barrier at 0x[0-9a-f]+: waiters=2/3>")
    assert re.fullmatch(pattern, repr(b)), repr(b)
    mine = b.wait(10)
    assert sorted([mine] + [t.result(5) for t in tasks]) == [0, 1, 2]
    assert b.n_waiting == 0


def test_barrier_action_once_per_generation(mp):
    count = SharedInts(1)

    def action():
        count[0] += 1

    b = mp.Barrier(3, action=action)
    for generation in range(1, 4):
        tasks = [ThreadTask(b.wait, 10) for _ in range(3)]
        assert sorted(t.result(10) for t in tasks) == [0, 1, 2]
        assert count[0] == generation


def test_barrier_action_raising_breaks_barrier(mp):
    def action():
        raise RuntimeError("boom")

    b = mp.Barrier(3, action=action)
    tasks = [ThreadTask(b.wait, 10) for _ in range(3)]
    for t in tasks:
        t.join(10)
    kinds = sorted(type(t.error).__name__ for t in tasks)
    assert kinds == ["BrokenBarrierError", "BrokenBarrierError", "RuntimeError"]
    assert b.broken is True
    with pytest.raises(BrokenBarrierError):
        b.wait(1)
    b.reset()
    assert b.broken is False


def test_barrier_abort(mp):
    b = mp.Barrier(3)
    tasks = [ThreadTask(b.wait, 10) for _ in range(2)]
    assert wait_until(lambda: b.n_waiting == 2, 5)
    b.abort()
    for t in tasks:
        t.join(5)
        assert isinstance(t.error, BrokenBarrierError)
    assert b.broken is True
    t0 = time.monotonic()
    with pytest.raises(BrokenBarrierError):
        b.wait(10)  # broken: fails at once
    assert time.monotonic() - t0 < 5


def test_barrier_reset_wakes_waiters_and_restores(mp):
    b = mp.Barrier(3)
    tasks = [ThreadTask(b.wait, 10) for _ in range(2)]
    assert wait_until(lambda: b.n_waiting == 2, 5)
    b.reset()
    for t in tasks:
        t.join(5)
        assert isinstance(t.error, BrokenBarrierError)
    assert b.broken is False
    tasks = [ThreadTask(b.wait, 10) for _ in range(3)]
    assert sorted(t.result(10) for t in tasks) == [0, 1, 2]


def test_barrier_timeout_breaks(mp):
    b = mp.Barrier(2)
    with pytest.raises(BrokenBarrierError):
        b.wait(timeout=0.1)
    assert b.broken is True
    assert re.fullmatch(_repr_pattern(mp, "Barrier", r"<[\w.]*Barrier at 0x[0-9a-f]+: broken>"), repr(b)), repr(b)
    b.reset()
    assert b.broken is False


def test_barrier_default_timeout_breaks_others(mp):
    b = mp.Barrier(3, timeout=0.2)
    other = ThreadTask(b.wait, 10)  # explicit timeout on this one
    with pytest.raises(BrokenBarrierError):
        b.wait()  # uses the barrier's default timeout
    other.join(5)
    assert isinstance(other.error, BrokenBarrierError)
    assert b.broken is True


def test_barrier_processes(mp):
    b = mp.Barrier(3)

    def party():
        return [b.wait(10), b.wait(10)]

    with ChildSet() as cs:
        children = [cs.start(party) for _ in range(2)]
        wait_blocked(*children)  # waiting for the third party
        assert not any(c.reported() for c in children)
        mine = [b.wait(10), b.wait(10)]
        theirs = [c.result(10) for c in children]
    for gen in range(2):
        assert sorted([mine[gen]] + [t[gen] for t in theirs]) == [0, 1, 2]


def test_barrier_action_across_processes(mp):
    count = SharedInts(2)

    def action():
        count[0] += 1
        count[1] = os.getpid()

    b = mp.Barrier(3, action=action)

    def party():
        for _ in range(3):
            b.wait(10)
        return True

    with ChildSet() as cs:
        children = [cs.start(party) for _ in range(3)]
        assert [c.result(10) for c in children] == [True] * 3
        pids = {c.pid for c in children}
    assert count[0] == 3
    assert count[1] in pids  # run by one of the parties, in its own process


def test_barrier_abort_wakes_other_process(mp):
    b = mp.Barrier(2)

    def party():
        try:
            b.wait(10)
        except BrokenBarrierError:
            return "broken"
        return "passed"

    with ChildSet() as cs:
        child = cs.start(party)
        assert wait_until(lambda: b.n_waiting == 1, 5)
        assert blocked(child, 0.1)
        b.abort()
        assert child.result(5) == "broken"
    assert b.broken is True


# ==========================================================================
# mutual exclusion across processes


N_PROCS, N_INCR = 4, 2000


def _exclusion_factory(mp, kind):
    if kind == "Lock":
        return mp.Lock()
    if kind == "RLock":
        return mp.RLock()
    if kind == "Semaphore":
        return mp.Semaphore(1)
    if kind == "BoundedSemaphore":
        return mp.BoundedSemaphore(1)
    if kind == "Condition":
        return mp.Condition()
    if kind == "Value.get_lock":
        return mp.Value("i", 0).get_lock()
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["Lock", "RLock", "Semaphore", "BoundedSemaphore", "Condition", "Value.get_lock"]
)
def test_mutual_exclusion_across_processes(mp, kind):
    lock = _exclusion_factory(mp, kind)
    counter = SharedInts(1)  # plain shared memory: only the lock protects it

    def work():
        for _ in range(N_INCR):
            with lock:
                v = counter[0]
                os.sched_yield()  # widen the window between read and write
                counter[0] = v + 1
        return True

    with ChildSet() as cs:
        children = [cs.start(work) for _ in range(N_PROCS)]
        assert [c.result(30) for c in children] == [True] * N_PROCS
    assert counter[0] == N_PROCS * N_INCR


def test_mutual_exclusion_threads_and_processes(mp):
    lock = mp.Lock()
    counter = SharedInts(1)

    def work():
        for _ in range(1000):
            with lock:
                v = counter[0]
                os.sched_yield()
                counter[0] = v + 1
        return True

    with ChildSet() as cs:
        children = [cs.start(work) for _ in range(2)]
        tasks = [ThreadTask(work) for _ in range(2)]
        assert [t.result(30) for t in tasks] == [True, True]
        assert [c.result(30) for c in children] == [True, True]
    assert counter[0] == 4000


def test_nan_timeout_is_a_value_error_cproc(cproc):
    """A NaN timeout is refused with one clear error (multiprocessing's
    differ by call: OSError EINVAL from Event/Condition/Barrier waits, a
    ValueError from Queue.get, ignored by an uncontended acquire)."""
    nan = float("nan")
    cond = cproc.Condition()
    calls = [
        lambda: cproc.Lock().acquire(timeout=nan),
        lambda: cproc.Semaphore(0).acquire(timeout=nan),
        lambda: cproc.Event().wait(nan),
        lambda: cproc.Barrier(2).wait(nan),
        lambda: cproc.Queue().get(timeout=nan),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="^timeout must not be NaN$"):
            call()
    with cond:
        with pytest.raises(ValueError, match="^timeout must not be NaN$"):
            cond.wait(nan)
        assert cond.wait(0) is False      # the lock is still held, the condition usable


def test_uninitialised_objects_refuse_use_cproc(cproc):
    """An object made by __new__ without __init__ raises one error (ValueError
    "<type> object is not initialized") from every call, instead of touching
    memory it does not have."""
    made = [cproc.Lock(), cproc.RLock(), cproc.Semaphore(), cproc.BoundedSemaphore(), cproc.Event(),
            cproc.Condition(), cproc.Barrier(2), cproc.Value("i", 1)]
    calls = {"acquire": (), "release": (), "__enter__": (), "is_set": (), "set": (), "wait": (0,),
             "notify": (), "reset": (), "get_lock": ()}
    tried = 0
    for obj in made:
        tp = type(obj)
        bare = tp.__new__(tp)
        for name, args in calls.items():
            if name in dir(tp):
                tried += 1
                with pytest.raises(ValueError, match=f"^{re.escape(tp.__name__)} object is not initialized$|"
                                                     f"^{re.escape(tp.__module__)}\\.{tp.__name__} object is not initialized$"):
                    getattr(bare, name)(*args)
    assert tried >= 16
