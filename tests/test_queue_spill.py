"""Large queue messages in spill blocks (csrc/spill.c): cproc's own promises.

A message whose payload is 256 KiB or more travels in a block of the queue's
memfd outside the ring: the producer writes it before taking the queue's
lock, the consumer reads it after releasing it. What a user must see is
unchanged: the same objects come out, in order, whether a message went
through a block or the ring (more outstanding large messages than blocks go
through the ring), across processes and through a Pool. What these tests
add is what the blocks promise: they are free again once read; a process
killed while it writes or reads one does not keep it; their pages are kept
for reuse only within a bound and given back once the queue is quiet.

``Queue._ring_info()`` (a test hook) reports the blocks: ``spill_blocks``
(how many exist), ``spill_blocks_in_use``, ``spill_kept_bytes``.
"""

import hashlib
import os
import pickle

import pytest

from helpers.blocking import wait_until
from helpers.children import ChildSet

pytestmark = [pytest.mark.timeout(120), pytest.mark.cproc_only]

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is a test dependency
    numpy = None

KiB = 1 << 10
MiB = 1 << 20
SPILL_OVER = 256 * KiB


@pytest.fixture
def queue(cproc):
    made = []

    def make(*args, **kwargs):
        q = cproc.Queue(*args, **kwargs)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()
        q.join_thread()
    made.clear()  # the fixture's value (make) outlives this teardown


def info(q):
    return q._ring_info()


def blocks_in_use(q):
    return info(q)["spill_blocks_in_use"]


def numbered(i, size):
    """size bytes that say which message they are at both ends."""
    tag = i.to_bytes(8, "little")
    return tag + bytes([i % 251]) * (size - 16) + tag


# --------------------------------------------------------------------------
# which messages use a block, and what comes out


def _objects():
    big_list = list(range(SPILL_OVER // 2))           # pickles to > 256 KiB
    objs = {
        "bytes": os.urandom(MiB),
        "bytearray": bytearray(os.urandom(MiB)),
        "pickle": big_list,
        "str": "é" * MiB,
    }
    if numpy is not None:
        objs["numpy (out-of-band buffer)"] = numpy.arange(MiB // 8, dtype="f8")
        objs["numpy pair in a dict"] = {"a": numpy.ones(MiB // 4, dtype="i4"),
                                        "b": numpy.zeros(300 * KiB, dtype="u1"), "n": 7}
    return objs


@pytest.mark.parametrize("kind", sorted(_objects()))
def test_large_message_goes_through_a_block(queue, kind):
    obj = _objects()[kind]
    q = queue()
    q.put(obj)
    assert blocks_in_use(q) == 1
    assert info(q)["used"] < 4 * KiB          # the ring holds only the reference
    assert q.qsize() == 1
    got = q.get(timeout=10)
    assert type(got) is type(obj)
    if numpy is not None and isinstance(obj, numpy.ndarray):
        assert got.dtype == obj.dtype and numpy.array_equal(got, obj)
    elif isinstance(obj, dict) and numpy is not None:
        assert got["n"] == 7 and all(numpy.array_equal(got[k], obj[k]) for k in "ab")
    else:
        assert got == obj
    assert blocks_in_use(q) == 0
    assert q.qsize() == 0


@pytest.mark.skipif(numpy is None, reason="numpy is not installed")
def test_message_of_many_small_buffers_stays_in_the_ring(queue):
    # 100 out-of-band buffers (one system call each in a block): the ring
    arrays = [numpy.full(4 * KiB, i, dtype="u1") for i in range(100)]
    q = queue()
    q.put(arrays)
    assert blocks_in_use(q) == 0 and info(q)["used"] > 400 * KiB
    got = q.get(timeout=10)
    assert len(got) == 100 and all(numpy.array_equal(g, a) for g, a in zip(got, arrays))


def test_message_just_under_the_threshold_stays_in_the_ring(queue):
    q = queue()
    q.put(b"x" * (SPILL_OVER - 1))
    assert blocks_in_use(q) == 0
    assert info(q)["used"] >= SPILL_OVER - 1
    assert q.get(timeout=10) == b"x" * (SPILL_OVER - 1)


def test_more_large_messages_than_blocks_keep_their_order(queue):
    q = queue()
    blocks = info(q)["spill_blocks"]
    count = blocks + 40
    sizes = [SPILL_OVER + 8 * (i % 5) for i in range(count)]
    for i, size in enumerate(sizes):
        q.put(numbered(i, size))
        if i % 3 == 0:
            q.put(i)                            # small messages in between
    assert blocks_in_use(q) == blocks           # the rest went through the ring
    assert info(q)["used"] > 40 * SPILL_OVER
    for i, size in enumerate(sizes):
        got = q.get(timeout=10)
        assert got == numbered(i, size), f"message {i}"
        if i % 3 == 0:
            assert q.get(timeout=10) == i
    assert q.qsize() == 0 and blocks_in_use(q) == 0


def test_put_many_and_get_many_with_large_messages(queue):
    q = queue()
    items = [numbered(i, SPILL_OVER + i) if i % 2 else i for i in range(20)]
    q.put_many(items)
    assert blocks_in_use(q) == 10
    got = []
    while len(got) < len(items):
        got += q.get_many(7, timeout=10)
    assert got == items
    assert blocks_in_use(q) == 0


def test_bounded_queue_with_large_messages(queue):
    q = queue(2)
    q.put(numbered(0, MiB))
    q.put(numbered(1, MiB))
    with pytest.raises(Exception) as info_:
        q.put(numbered(2, MiB), timeout=0.05)
    assert type(info_.value).__name__ == "Full"
    assert blocks_in_use(q) == 2                # the refused one kept no block
    assert q.get(timeout=10) == numbered(0, MiB)
    q.put(numbered(2, MiB), timeout=10)
    assert [q.get(timeout=10) for _ in range(2)] == [numbered(1, MiB), numbered(2, MiB)]
    assert blocks_in_use(q) == 0


def test_unpicklable_large_message_takes_no_block(queue):
    q = queue()

    class Local:                                # not picklable by reference
        pass

    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        q.put([b"x" * MiB, Local()])
    assert blocks_in_use(q) == 0 and q.qsize() == 0


# --------------------------------------------------------------------------
# across processes


def _produce(q, count):
    digest = hashlib.sha256()
    for i in range(count):
        size = (10, SPILL_OVER, 3 * MiB + 5)[i % 3]
        item = numbered(i, size) if size > 16 else i
        digest.update(pickle.dumps(item))
        q.put(item)
    return digest.hexdigest()


def _consume(q, count):
    digest = hashlib.sha256()
    for _ in range(count):
        digest.update(pickle.dumps(q.get(timeout=30)))
    return digest.hexdigest()


@pytest.mark.parametrize("child_role", ["producer", "consumer"])
def test_large_and_small_messages_between_processes(cproc, queue, child_role):
    q = queue()
    in_child, in_parent = (_produce, _consume) if child_role == "producer" else (_consume, _produce)
    with ChildSet(cproc.Process) as kids:
        child = kids.start(in_child, q, 300)
        mine = in_parent(q, 300)
        assert child.result(60) == mine
        assert child.join() == 0
    assert blocks_in_use(q) == 0


def _big_result(n):
    return bytes([n]) * (2 * MiB)


def test_pool_tasks_and_results_go_through_blocks(cproc):
    args = [bytes([i]) * MiB for i in range(6)]
    with cproc.Pool(2) as pool:
        assert pool.map(len, args) == [MiB] * 6
        assert pool.map(_big_result, range(6)) == [_big_result(i) for i in range(6)]
        pool.close()
        pool.join()


# --------------------------------------------------------------------------
# a process killed in the middle of a block


def _put_huge(q, size):
    q.put(b"h" * size)


def _get_one(q):
    return len(q.get(timeout=30))


def _kill_while(kids, q, start, busy, what):
    """Start a child and SIGKILL it while busy(q) holds; retry if it was too
    quick to be caught (the window is the copy of a 512 MiB message)."""
    for _ in range(3):
        child = start()
        caught = wait_until(lambda: busy(q) or child.reported(), timeout=30, interval=0.0005)
        if busy(q):
            child.proc.kill()
            child.join(10)
            return
        child.join(30)
        while q.qsize():
            q.get(timeout=10)
    pytest.fail(f"never caught the child {what} (last state {caught}, {info(q)})")


def _fill_every_block(q):
    """Put one more large message than there are free blocks; all must be
    in blocks (so the dead process's block was taken back)."""
    blocks = info(q)["spill_blocks"]
    for i in range(blocks):
        q.put(numbered(i, SPILL_OVER))
    assert blocks_in_use(q) == blocks
    assert info(q)["used"] < blocks * 4 * KiB
    for i in range(blocks):
        assert q.get(timeout=10) == numbered(i, SPILL_OVER)
    assert blocks_in_use(q) == 0


def test_block_of_a_writer_killed_mid_put_is_taken_back(cproc, queue):
    q = queue()
    with ChildSet(cproc.Process) as kids:
        _kill_while(kids, q, lambda: kids.start(_put_huge, q, 512 * MiB),
                    lambda q: blocks_in_use(q) == 1 and q.qsize() == 0, "writing")
    assert q.qsize() == 0                       # the interrupted put published nothing
    assert blocks_in_use(q) == 1                # held by the dead writer, until needed
    _fill_every_block(q)


def test_block_of_a_reader_killed_mid_get_is_taken_back(cproc, queue):
    q = queue()

    def start():
        q.put(b"r" * (512 * MiB))
        return kids.start(_get_one, q)

    with ChildSet(cproc.Process) as kids:
        _kill_while(kids, q, start, lambda q: blocks_in_use(q) == 1 and q.qsize() == 0, "reading")
    # The message the killed reader had taken is gone with it (multiprocessing
    # would leave the pipe mid-message); the queue goes on.
    assert q.qsize() == 0
    q.put("after")
    assert q.get(timeout=10) == "after"
    _fill_every_block(q)


# --------------------------------------------------------------------------
# memory


def test_pages_kept_within_bounds_and_given_back_when_quiet(queue):
    q = queue()
    q.put(b"a" * MiB)
    q.get(timeout=10)
    assert info(q)["spill_kept_bytes"] == MiB   # kept: the next one is written to warm pages
    q.put(b"b" * (16 * MiB))                    # larger than a block keeps
    q.get(timeout=10)
    assert info(q)["spill_kept_bytes"] == 0
    for i in range(100):                        # many outstanding: at most 64 MiB kept
        q.put(numbered(i, 2 * MiB))
    for i in range(100):
        assert q.get(timeout=10) == numbered(i, 2 * MiB)
    assert 0 < info(q)["spill_kept_bytes"] <= 64 * MiB

    def quiet_queue_gave_them_back():
        q.put(0)
        q.get(timeout=10)
        return info(q)["spill_kept_bytes"] == 0

    # released at the first emptying after a second with no large message
    assert wait_until(quiet_queue_gave_them_back, timeout=10, interval=0.1)


def test_memfd_holds_no_block_pages_after_a_large_message(queue):
    q = queue()
    q.put(b"z" * (64 * MiB))
    assert q.get(timeout=10) == b"z" * (64 * MiB)
    st = os.fstat(_queue_fd(q))
    assert st.st_blocks * 512 < 8 * MiB, f"{st.st_blocks * 512} bytes still allocated"


def _queue_fd(q):
    # the handle is (dev, ino, pid, fd, pid2, fd2): our own fd is the 4th
    return q.__reduce__()[1][0][3]
