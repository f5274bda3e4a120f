"""Stress: every primitive hammered across processes (cproc only).

Many rounds of the patterns that lost wake-ups or notifications would break:
ping-pong through locks and queues, semaphore hand-offs, Event pulses while
the waiters sleep, Condition notify / notify_all / replies on the same
Condition (CPython's test_waitfor pattern included), barrier cycles, pool
results. Every blocking call has a generous timeout (LONG) that must never
expire: an expiry is a lost wake-up, reported as a failure.

Short by default (for CI); CPROC_STRESS=long runs thousands of rounds:
    CPROC_STRESS=long python -m pytest tests/test_stress.py
The protocols themselves are model-checked in models/ (models/run.sh).
"""

import os
import time

import pytest

from helpers.blocking import wait_blocked, wait_until
from helpers.children import ChildSet, SharedInts

LONG_MODE = os.environ.get("CPROC_STRESS", "") == "long"
LONG = 10.0                     # seconds a single wait may take: never reached


def rounds(short, long):
    return long if LONG_MODE else short


pytestmark = pytest.mark.timeout(1800 if LONG_MODE else 60)

PINGS = rounds(2000, 50000)     # ping-pong round trips
PULSES = rounds(100, 3000)      # Event pulses (each waits for every waiter to sleep)
NOTIFIES = rounds(300, 10000)   # Condition rounds
STEALS = rounds(100, 3000)      # notify-then-own-wait rounds (each costs a short wait)
CYCLES = rounds(1000, 20000)    # Barrier cycles
READER_ROUNDS = rounds(300, 5000)   # SimpleQueue reader rounds (3 producers started each)


# --------------------------------------------------------------------------
# Lock, RLock, Semaphore


def _lock_pong(ping, pong, n):
    for _ in range(n):
        if not ping.acquire(timeout=LONG):
            return "ping never came"
        pong.release()
    return "done"


def test_lock_ping_pong(cproc):
    """Two held Locks used as batons: each release must wake the other side."""
    ping, pong = cproc.Lock(), cproc.Lock()
    ping.acquire()
    pong.acquire()
    with ChildSet() as cs:
        child = cs.start(_lock_pong, ping, pong, PINGS)
        for i in range(PINGS):
            ping.release()
            assert pong.acquire(timeout=LONG), f"round {i}: pong never came"
        assert child.result(LONG) == "done"


def _count_under(lock, shared, n, recursive):
    for _ in range(n):
        if not lock.acquire(timeout=LONG):
            return "acquire timed out"
        try:
            if recursive:
                assert lock.acquire(timeout=0)
            value = shared[0]
            if shared[1]:
                return "two holders"
            shared[1] = 1
            os.sched_yield()        # invite the others in while we hold it
            shared[1] = 0
            shared[0] = value + 1
            if recursive:
                lock.release()
        finally:
            lock.release()
    return "done"


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_lock_contended_by_three_processes(cproc, kind):
    lock = getattr(cproc, kind)()
    shared = SharedInts(2)
    n = PINGS
    with ChildSet() as cs:
        children = [cs.start(_count_under, lock, shared, n, kind == "RLock") for _ in range(2)]
        assert _count_under(lock, shared, n, kind == "RLock") == "done"
        assert [c.result(LONG) for c in children] == ["done", "done"]
    assert shared[0] == 3 * n


def _sem_consume(sem, bound, inside, guard, n):
    for _ in range(n):
        if not sem.acquire(timeout=LONG):
            return "acquire timed out"
        if bound is not None:
            with guard:
                inside[0] += 1
                if inside[0] > bound:
                    return "too many inside"
            os.sched_yield()
            with guard:
                inside[0] -= 1
            sem.release()
    return "done"


def test_semaphore_hand_offs(cproc):
    """Semaphore(0): one producer, two consumers, back-to-back releases."""
    sem = cproc.Semaphore(0)
    with ChildSet() as cs:
        children = [cs.start(_sem_consume, sem, None, None, None, PINGS) for _ in range(2)]
        for _ in range(2 * PINGS):
            sem.release()
        assert [c.result(LONG) for c in children] == ["done", "done"]
    assert sem.get_value() == 0


def test_bounded_semaphore_admits_two_at_a_time(cproc):
    sem = cproc.BoundedSemaphore(2)
    guard = cproc.Lock()
    inside = SharedInts(1)
    with ChildSet() as cs:
        children = [cs.start(_sem_consume, sem, 2, inside, guard, PINGS) for _ in range(3)]
        assert [c.result(LONG) for c in children] == ["done"] * 3
    assert sem.get_value() == 2


# --------------------------------------------------------------------------
# Event


def _event_waiter(ev, shared, slot, k, n):
    """Round r: wait for the go (shared[0] == r + 1), say so (shared[1 + slot]),
    wait(), say it returned (shared[1 + k + slot]). Returns what wait()s returned."""
    results = []
    for r in range(1, n + 1):
        if not wait_until(lambda: shared[0] == r, LONG, interval=0.0005):
            return f"round {r}: no go"
        shared[1 + slot] = r
        t0 = time.monotonic()
        flag = ev.wait(LONG)
        if time.monotonic() - t0 >= LONG:
            return f"round {r}: slept the whole timeout"
        results.append(flag)
        shared[1 + k + slot] = r
    return results


def test_event_pulses_wake_every_sleeping_waiter(cproc):
    """Each round: every waiter asleep in wait(), then set(); clear() (a
    pulse), or, every third round, a set() that stays until all returned.
    Every wait() must return at once: after a pulse with whatever flag it
    read (True only if it looked before the clear()), after a set with True."""
    ev = cproc.Event()
    k = 3
    shared = SharedInts(1 + 2 * k)
    stays = [r % 3 == 0 for r in range(1, PULSES + 1)]
    with ChildSet() as cs:
        children = [cs.start(_event_waiter, ev, shared, i, k, PULSES) for i in range(k)]
        for r in range(1, PULSES + 1):
            shared[0] = r
            for i, child in enumerate(children):
                assert wait_until(lambda: shared[1 + i] == r, LONG), f"round {r}: waiter {i} not there"
                wait_blocked(child.pid, timeout=LONG, wchan="futex")
            ev.set()
            if not stays[r - 1]:
                ev.clear()
            for i in range(k):
                assert wait_until(lambda: shared[1 + k + i] == r, LONG), f"round {r}: waiter {i} slept on"
            ev.clear()
        results = [c.result(LONG) for c in children]
    for got in results:
        assert isinstance(got, list), got
        assert [flag for flag, stay in zip(got, stays) if stay] == [True] * sum(stays)


# --------------------------------------------------------------------------
# Condition


def _ack_rounds(cond, state, n):
    """state[0]: round the parent announced; state[1]: acknowledgements."""
    with cond:
        for r in range(1, n + 1):
            if not cond.wait_for(lambda: state[0] >= r, timeout=LONG):
                return f"round {r}: never notified"
            state[1] += 1
            # to the parent: all, as the other children may wait for the
            # next round (a notify() could then go to one of them)
            cond.notify_all()
    return "done"


@pytest.mark.parametrize("wake", ["notify_all", "notify3"])
def test_condition_notify_all_then_replies(cproc, wake):
    """Three waiters acknowledge on the same Condition the parent waits on."""
    cond = cproc.Condition()
    state = SharedInts(2)
    with ChildSet() as cs:
        children = [cs.start(_ack_rounds, cond, state, NOTIFIES) for _ in range(3)]
        with cond:
            for r in range(1, NOTIFIES + 1):
                state[0] = r
                cond.notify_all() if wake == "notify_all" else cond.notify(3)
                assert cond.wait_for(lambda: state[1] == 3 * r, timeout=LONG), f"round {r}: acks lost"
        assert [c.result(LONG) for c in children] == ["done"] * 3


def _waitfor_child(cond, state, n):
    """CPython's _test_waitfor_f, n rounds: announce, notify, wait for 4 steps."""
    for r in range(n):
        with cond:
            state.value = 10 * r
            cond.notify()
            if not cond.wait_for(lambda: state.value == 10 * r + 4, timeout=LONG):
                return f"round {r}: wait_for timed out at {state.value}"
    return "done"


def test_condition_waitfor_pattern(cproc):
    """CPython's test_waitfor, repeated: parent and child wait_for/notify
    over the default RLock and a shared Value; no wait_for may time out."""
    cond = cproc.Condition()
    state = cproc.Value("i", -1)
    with ChildSet() as cs:
        child = cs.start(_waitfor_child, cond, state, NOTIFIES)
        for r in range(NOTIFIES):
            with cond:
                assert cond.wait_for(lambda: state.value == 10 * r, timeout=LONG), f"round {r}"
            for _ in range(4):
                with cond:
                    state.value += 1
                    cond.notify()
        assert child.result(LONG) == "done"


def _steal_victim(cond, state, n):
    """Each round: register (state[0] = round), wait without predicate."""
    results = []
    for r in range(1, n + 1):
        with cond:
            state[0] = r
            results.append(cond.wait(LONG))
    return results


def test_condition_notifier_never_steals_its_notify(cproc):
    """The notifier waits right after notify(): the notification is the
    sleeping child's, so the notifier's wait times out and the child's
    returns True, every round."""
    cond = cproc.Condition()
    state = SharedInts(1)
    with ChildSet() as cs:
        child = cs.start(_steal_victim, cond, state, STEALS)
        for r in range(1, STEALS + 1):
            assert wait_until(lambda: state[0] == r, LONG)
            with cond:              # the child is inside wait() once we hold the lock
                cond.notify()
                assert cond.wait(0.01) is False, f"round {r}: the notifier took the notification"
        assert child.result(LONG) == [True] * STEALS


def _ticket_taker(cond, state, n):
    with cond:
        for _ in range(n):
            if not cond.wait_for(lambda: state[0] > 0, timeout=LONG):
                return "no ticket came"
            state[0] -= 1
            state[1] += 1
            cond.notify_all()       # the producer (not to a taker only)
    return "done"


def test_condition_notify_one_per_ticket(cproc):
    """A producer gives tickets one at a time with notify(1), at most two
    waiting: each notify(1) must wake a taker that waits at that moment."""
    cond = cproc.Condition(cproc.Lock())
    state = SharedInts(2)           # tickets available, tickets taken
    n = NOTIFIES * 2
    with ChildSet() as cs:
        children = [cs.start(_ticket_taker, cond, state, n) for _ in range(2)]
        with cond:
            for i in range(2 * n):
                assert cond.wait_for(lambda: state[0] < 2, timeout=LONG), f"ticket {i}: no taker"
                state[0] += 1
                cond.notify(1)
            assert cond.wait_for(lambda: state[1] == 2 * n, timeout=LONG)
        assert [c.result(LONG) for c in children] == ["done", "done"]


# --------------------------------------------------------------------------
# Barrier, Queue, Pool


def _barrier_rounds(barrier, n):
    return [barrier.wait(LONG) for _ in range(n)]


def test_barrier_cycles(cproc):
    count = SharedInts(1)

    def action():
        count[0] += 1

    barrier = cproc.Barrier(3, action)
    with ChildSet() as cs:
        children = [cs.start(_barrier_rounds, barrier, CYCLES) for _ in range(2)]
        mine = _barrier_rounds(barrier, CYCLES)
        theirs = [c.result(LONG) for c in children]
    for r, indices in enumerate(zip(mine, *theirs)):
        assert sorted(indices) == [0, 1, 2], f"cycle {r}: {indices}"
    assert count[0] == CYCLES
    assert not barrier.broken


def _queue_pong(inq, outq, n):
    for _ in range(n):
        outq.put(inq.get(timeout=LONG) + 1)
    return "done"


def test_queue_ping_pong(cproc):
    a, b = cproc.Queue(), cproc.Queue()
    with ChildSet() as cs:
        child = cs.start(_queue_pong, a, b, PINGS)
        for i in range(PINGS):
            a.put(2 * i)
            assert b.get(timeout=LONG) == 2 * i + 1
        assert child.result(LONG) == "done"


def _queue_drain(q, n):
    return [q.get(timeout=LONG) for _ in range(n)]


def test_queue_two_consumers_race_for_each_record(cproc):
    q = cproc.Queue(maxsize=4)      # the producer also sleeps on a full queue
    with ChildSet() as cs:
        children = [cs.start(_queue_drain, q, PINGS) for _ in range(2)]
        for i in range(2 * PINGS):
            q.put(i, timeout=LONG)
        got = [c.result(LONG) for c in children]
    assert sorted(got[0] + got[1]) == list(range(2 * PINGS))
    assert all(g == sorted(g) for g in got)


def _put_range(q, start, n):
    for i in range(start, start + n):
        q.put(i)
    return "done"


def test_simple_queue_reader_readable_exactly_while_an_item_waits(cproc):
    """SimpleQueue._reader as concurrent.futures' manager thread uses it:
    wait() on its pipe, recv() only when wait() returned it. The pipe must
    never be readable beside an empty queue (recv() would sleep, deaf to the
    executor's wake-ups: the hang CPython's test_context_manager_shutdown
    found) nor empty beside an item (a lost wake-up). Each round has a new
    queue and new producers, as the executor's workers: each producer's
    first put opens the watcher's pipe, the window the old protocol lost in
    (it failed here 1 round in ~30-100). models/watch.pml."""
    import multiprocessing.connection

    for r in range(READER_ROUNDS):
        q = cproc.SimpleQueue()
        reader = q._reader
        with ChildSet() as cs:
            children = [cs.start(_put_range, q, 5 * k, 5) for k in range(3)]
            got = []
            while len(got) < 15:
                ready = multiprocessing.connection.wait([reader], timeout=LONG)
                assert ready == [reader], f"round {r}, after {len(got)} items: the pipe stayed empty"
                assert not q.empty(), f"round {r}, after {len(got)} items: the pipe was readable, the queue empty"
                got.append(reader.recv())
            assert [c.result(LONG) for c in children] == ["done"] * 3
        assert multiprocessing.connection.wait([reader], timeout=0) == [], f"round {r}: readable once emptied"
        assert sorted(got) == list(range(15))
        q.close()


def _square(x):
    return x * x


def test_pool_results_one_at_a_time(cproc):
    with cproc.Pool(2) as pool:
        for i in range(PINGS):
            assert pool.apply_async(_square, (i,)).get(timeout=LONG) == i * i
