"""A process killed at any instant inside a queue operation leaves the queue
whole for everyone else (csrc/qlock.c, queue_repair; csrc/spill.c).

Each test arms one of the queue's crash points (``Queue._die_at(name)``, a
test hook: the process SIGKILLs itself there) in a fork child, lets the child
start an operation, and checks what the survivors see: every message that
the dead process had not taken is still there, in order, exactly once;
``qsize()``/``empty()`` agree with what ``get`` returns; an empty queue
raises ``queue.Empty`` (never an error); no spill block stays in use; puts
and gets go on working. Crash points sit where a death leaves the lock held
half-way: after the records were read but before the head moved, after the
head moved but before the count did, and the same on the put side, in the
middle of moving the ring, and in the middle of a repair.
"""

import os
import queue as stdlib_queue
import resource
import signal
import time

import pytest

from helpers.blocking import proc_state, wait_until
from helpers.children import ChildSet

pytestmark = [pytest.mark.timeout(60), pytest.mark.cproc_only]

KiB = 1 << 10
BIG = 300 * KiB             # goes to a spill block
MEDIUM = 200 * KiB          # stays in the ring


def payload(i, size):
    """size bytes that say which message they are at both ends."""
    tag = i.to_bytes(4, "little")
    return tag + bytes([65 + i % 26]) * (size - 8) + tag


def name_of(obj):
    if isinstance(obj, (bytes, bytearray)):
        return ("bytes", int.from_bytes(obj[:4], "little"), len(obj))
    return obj


def _die_in(q, point, op, *args):
    q._die_at(point)
    op(q, *args)
    os._exit(3)             # not reached: the crash point kills the process


def killed_in(q, point, op, *args):
    """Run op(q, *args) in a fork child that dies at `point`."""
    with ChildSet() as kids:
        kid = kids.start(_die_in, q, point, op, *args)
        assert kid.join(30) == -signal.SIGKILL, "the crash point was not reached"


def drain(q):
    """Everything left, by blocking gets; then the queue must say it is empty."""
    got = []
    while True:
        try:
            got.append(name_of(q.get(timeout=0.5)))
        except stdlib_queue.Empty:
            break
    assert q.qsize() == 0 and q.empty()
    with pytest.raises(stdlib_queue.Empty):
        q.get_nowait()
    return got


def assert_healthy(q):
    """Puts and gets of every kind still work; no block is left in use."""
    q.put("small")
    q.put(payload(900, BIG))
    q.put_many([1, 2, 3])
    assert q.qsize() == 5
    assert [name_of(x) for x in q.get_many(10)] == ["small", ("bytes", 900, BIG), 1, 2, 3]
    assert q._ring_info()["spill_blocks_in_use"] == 0


MESSAGES = [("bytes", 0, BIG), ("bytes", 1, MEDIUM), "third", ("bytes", 3, BIG), "fifth"]


def fill(q):
    for m in MESSAGES:
        q.put(payload(m[1], m[2]) if isinstance(m, tuple) else m)


def get_many(q, n):
    return q.get_many(n)


def get_one(q):
    return q.get()


@pytest.fixture
def new_queue(cproc):
    """Makes fresh queues, closed and dropped before the leak check runs."""
    made = []

    def make():
        made.append(cproc.Queue())
        return made[-1]

    yield make
    made.clear()


@pytest.mark.parametrize("op,n", [(get_many, 10), (get_many, 2), (get_one, 1)])
def test_consumer_killed_before_the_head_moved_takes_nothing(new_queue, op, n):
    q = new_queue()
    fill(q)
    killed_in(q, "get:before-head", op, *((n,) if op is get_many else ()))
    assert drain(q) == MESSAGES
    assert_healthy(q)


@pytest.mark.parametrize("n", [1, 2])
def test_consumer_killed_after_the_head_moved_took_its_messages(new_queue, n):
    q = new_queue()
    fill(q)
    killed_in(q, "get:before-count", get_many, n)
    assert drain(q) == MESSAGES[n:]
    assert_healthy(q)


def test_count_is_right_again_before_the_next_get(new_queue):
    q = new_queue()
    fill(q)
    killed_in(q, "get:before-count", get_many, 2)
    q.put("after")                       # takes the lock over: the count is repaired
    assert q.qsize() == len(MESSAGES) - 2 + 1
    assert drain(q) == MESSAGES[2:] + ["after"]


def put_batch(q, items):
    q.put_many(items)


BATCH = [payload(10, BIG), "b", payload(12, MEDIUM)]
BATCH_NAMES = [("bytes", 10, BIG), "b", ("bytes", 12, MEDIUM)]


def test_producer_killed_before_the_tail_moved_put_nothing(new_queue):
    q = new_queue()
    fill(q)
    killed_in(q, "put:before-tail", put_batch, BATCH)
    assert drain(q) == MESSAGES
    assert_healthy(q)


def test_producer_killed_after_the_tail_moved_put_everything(new_queue):
    q = new_queue()
    fill(q)
    killed_in(q, "put:before-count", put_batch, BATCH)
    assert drain(q) == MESSAGES + BATCH_NAMES
    assert_healthy(q)


GROWING = [payload(i, MEDIUM) for i in range(30, 38)]


def put_growing(q):
    q.put_many(GROWING)                 # 1.6 MiB more in the ring: it grows


def test_killed_while_moving_the_ring(new_queue):
    q = new_queue()
    fill(q)
    q.put_many([payload(i, 100 * KiB) for i in range(20, 28)])    # the ring wraps
    killed_in(q, "move:before-switch", put_growing)
    assert drain(q) == MESSAGES + [("bytes", i, 100 * KiB) for i in range(20, 28)]
    assert_healthy(q)


def repair_then_die(q):
    q.put("x")                          # takes the lock over from the first death


def test_killed_while_repairing_is_repaired_again(new_queue):
    q = new_queue()
    fill(q)
    killed_in(q, "get:before-head", get_many, 3)
    killed_in(q, "repair", repair_then_die)
    assert drain(q) == MESSAGES
    assert_healthy(q)


def test_get_of_another_process_takes_the_lock_over(new_queue):
    """A process whose get finds the lock held by a dead process takes it
    over and gets the message the dead process did not take."""
    q = new_queue()
    q.put("only")
    with ChildSet() as kids:
        killed_in(q, "get:before-head", get_one)
        assert kids.start(get_one, q).result(10) == "only"
    assert drain(q) == []


def put_one(q, item):
    q.put(item)
    return "put"


def test_reader_pipe_is_set_again_by_the_repair(cproc):
    """SimpleQueue._reader, which concurrent.futures waits on: a producer
    killed after its record entered the ring, before it was counted and
    before the reader's pipe was told. The next holder of the lock repairs
    the count and makes the pipe readable (models/watch.pml -DDEATH); the
    pipe then says what the queue holds, through to empty."""
    from multiprocessing.connection import wait

    q = cproc.SimpleQueue()
    reader = q._reader
    try:
        killed_in(q, "put:before-count", put_one, "dead's")
        with ChildSet() as kids:
            assert kids.start(put_one, q, "after").result(10) == "put"   # takes the lock over
        assert wait([reader], timeout=10) == [reader]
        assert reader.recv() == "dead's"
        assert wait([reader], timeout=0) == [reader]
        assert reader.recv() == "after"
        assert wait([reader], timeout=0) == []
        q.put("again")
        assert wait([reader], timeout=0) == [reader]
        assert reader.recv() == "again"
    finally:
        q.close()


def test_unknown_crash_point(new_queue):
    q = new_queue()
    with pytest.raises(ValueError, match="no crash point"):
        q._die_at("nowhere in particular")


# --------------------------------------------------------------------------
# a holder that is alive but slow: a get's timeout still counts


def _stop_in_get(q, ready):
    q._die_at("get:before-head", signal.SIGSTOP)
    ready.set()
    return q.get()


def test_get_timeout_counts_while_another_process_holds_the_lock(new_queue, cproc):
    """As multiprocessing's get (its read lock is acquired with the timeout):
    get(timeout) and get_nowait() raise queue.Empty on time while another
    process holds the queue's lock, and the queue is whole once it goes on."""
    q = new_queue()
    q.put("first")
    q.put("second")
    ready = cproc.Event()
    with ChildSet() as kids:
        kid = kids.start(_stop_in_get, q, ready)
        assert ready.wait(10)
        # until the child has stopped, holding the lock
        assert wait_until(lambda: proc_state(kid.pid) == "T", 10), "the child did not stop at its crash point"
        t0 = time.monotonic()
        with pytest.raises(stdlib_queue.Empty):
            q.get(timeout=0.2)
        waited = time.monotonic() - t0
        assert 0.19 <= waited < 2.0, f"get(timeout=0.2) raised after {waited:.3f}s"
        with pytest.raises(stdlib_queue.Empty):
            q.get_nowait()
        os.kill(kid.pid, signal.SIGCONT)
        assert kid.result(10) == "first"
    assert drain(q) == ["second"]


# --------------------------------------------------------------------------
# resources: the ring's place in its file, a file size limit


def test_ring_stays_near_the_start_of_its_file(new_queue):
    """Growing and shrinking again and again does not walk the ring further
    into its file (where it would one day run out of room)."""
    q = new_queue()
    largest = 0
    for cycle in range(2):
        q.put_many([payload(i, MEDIUM) for i in range(40)])    # ~8 MiB: the ring grows
        largest = max(largest, q._ring_info()["capacity"])
        assert len(q.get_many(40)) == 40
        for _ in range(3):              # a ring emptied after a quiet second shrinks
            time.sleep(1.05)
            q.put("x")
            assert q.get() == "x"
            if q._ring_info()["capacity"] < largest:
                break
        info = q._ring_info()
        assert info["capacity"] < largest, "the ring did not shrink"
        assert info["ring_offset"] + info["capacity"] <= 2 * largest + 4096, info


def _put_under_file_size_limit(q, size):
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 20, hard))
    data = payload(7, size)
    q.put(data)
    return q.get(timeout=10) == data


@pytest.mark.parametrize("size", [BIG, 3 << 20])
def test_large_message_under_a_file_size_limit(new_queue, size):
    """A process limited by `ulimit -f` (64 MiB here) still puts and gets
    large messages (the blocks, far into the queue's file, are out of its
    reach: the ring takes them)."""
    q = new_queue()
    with ChildSet() as kids:
        assert kids.start(_put_under_file_size_limit, q, size).result(30) is True
    assert_healthy(q)
