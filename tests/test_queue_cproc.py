"""Queue, SimpleQueue, JoinableQueue: cproc's own promises, beyond what
multiprocessing does (the differential tests are in test_queue.py).

Fixture ``cproc``: ``put`` pickles in the caller, so a pickling error comes
from ``put`` and leaves the queue unchanged, and the item is in shared memory when ``put`` returns (exact ``qsize``/``empty``/
``get_nowait`` at once, in any process; nothing lost when the putter exits,
even by ``os._exit`` or SIGKILL); an unbounded ``put`` and ``SimpleQueue.put``
never block (a 256 MiB message, 512 MiB outstanding with no reader);
``put_many``/``get_many``; large buffers (bytes, bytearray, memoryview, numpy)
round-trip; queues pickle to running and spawn children; a child SIGKILLed in
``get`` does not disturb the others; a million messages between 4 producers
and 4 consumers lose, duplicate and reorder nothing.

Children are cproc's Process; they report through a multiprocessing (stdlib)
pipe, so that a bug in cproc cannot hide in the report.
"""

import array
import hashlib
import importlib
import os
import pickle
import queue
import random
import signal
import threading
import time

import pytest

from helpers.blocking import wait_blocked
from helpers.children import FORK, ChildSet, Payload, ThreadTask
from helpers.queues import _warm_up_queues, new  # noqa: F401,F811 - fixtures
from helpers.queues import (OBJECTS, CustomError, MiB, assert_finishes, assert_waited, get_within,
    mismatches, raises_exact, timed_raise)

pytestmark = pytest.mark.timeout(60)

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is a test dependency
    numpy = None

needs_numpy = pytest.mark.skipif(numpy is None, reason="numpy is not installed")


# --------------------------------------------------------------------------
# put pickles in the caller: errors from put, the queue unchanged


MODULE_LAMBDA = lambda: 0  # noqa: E731 - pickled by reference: fails (its name is not "MODULE_LAMBDA")


def _unpicklables(tmp_path):
    def local_function():
        pass

    f = open(tmp_path / "open_file.txt", "w")  # noqa: SIM115 - closed by the caller
    return f, {
        "lambda": MODULE_LAMBDA,
        "local lambda": lambda: 0,
        "local function": local_function,
        "threading.Lock": threading.Lock(),
        "open file": f,
        "lock in a list": ["fine", threading.Lock()],
        "generator": (i for i in range(3)),
    }


def _pickle_error(obj):
    try:
        pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - the reference
        return type(exc)
    raise AssertionError(f"{obj!r} pickles")


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue", "SimpleQueue"])
def test_unpicklable_put_raises_and_changes_nothing(cproc, new, tmp_path, kind):
    q = new(getattr(cproc, kind))
    f, cases = _unpicklables(tmp_path)
    try:
        q.put("good 1")
        for name, obj in cases.items():
            expected = _pickle_error(obj)
            with pytest.raises(Exception) as info:
                q.put(obj)
            assert type(info.value) is expected, f"{name}: raised {type(info.value).__name__}: {info.value}"
            if kind != "SimpleQueue":
                assert q.qsize() == 1, f"{name}: qsize {q.qsize()} after a failed put"
            assert q.empty() is False
        q.put("good 2")
        if kind != "SimpleQueue":
            assert q.qsize() == 2
            assert q.get_nowait() == "good 1"
            assert q.get_nowait() == "good 2"
            assert q.qsize() == 0
        else:
            assert q.get() == "good 1"
            assert q.get() == "good 2"
        assert q.empty() is True
    finally:
        f.close()
    if kind == "JoinableQueue":
        q.task_done()
        q.task_done()
        with raises_exact(ValueError, "task_done() called too many times"):
            q.task_done()  # the failed puts were not counted
        assert ThreadTask(q.join).result(10) is None


def test_unpicklable_put_on_a_bounded_queue_frees_its_slot(cproc, new):
    q = new(cproc.Queue, 1)
    with pytest.raises(TypeError):
        q.put(threading.Lock(), block=False)
    assert q.qsize() == 0 and q.full() is False
    q.put_nowait("fits")
    assert q.full() is True
    assert q.get_nowait() == "fits"


def test_object_is_pickled_when_put_returns(cproc, new):
    q = new(cproc.Queue)
    obj = {"list": [1, 2]}
    q.put(obj)
    obj["list"].append(3)
    q.put(obj)
    assert q.get_nowait() == {"list": [1, 2]}
    assert q.get_nowait() == {"list": [1, 2, 3]}


# --------------------------------------------------------------------------
# the item is in the queue when put returns


def test_put_is_visible_at_once(cproc, new):
    q = new(cproc.Queue)
    for i in range(2000):
        q.put(i)
        assert q.empty() is False
        assert q.qsize() == 1
        assert q.get_nowait() == i
        assert q.empty() is True and q.qsize() == 0
    for i in range(100):
        q.put(i)
        assert q.qsize() == i + 1
    assert [q.get_nowait() for _ in range(100)] == list(range(100))


def test_closed_queue_with_items_still_answers(cproc, new):
    """At once after close(), not only after join_thread() (multiprocessing:
    once its feeder thread has closed the reader): empty() raises as in
    test_closed_queue_empty_after_a_put."""
    q = new(cproc.Queue, 3)
    q.put("a")
    q.put("b")
    q.close()
    assert (q.qsize(), q.full()) == (2, False)
    with pytest.raises(OSError, match="handle is closed"):
        q.empty()
    q2 = new(cproc.Queue, 2)
    q2.put("a")
    q2.put("b")
    q2.close()
    assert (q2.qsize(), q2.full()) == (2, True)


def _ping_pong_putter(q, to_parent, from_parent, rounds):
    for i in range(rounds):
        q.put(("item", i))
        if q.qsize() != 1:
            raise AssertionError(f"qsize {q.qsize()} right after put #{i}")
        to_parent.send(i)
        if not from_parent.poll(10):
            raise AssertionError("the parent did not answer")
        from_parent.recv()
    return rounds


def test_qsize_and_get_nowait_exact_across_processes(cproc, new):
    q = new(cproc.Queue)
    to_parent_r, to_parent_w = FORK.Pipe(duplex=False)
    from_parent_r, from_parent_w = FORK.Pipe(duplex=False)
    try:
        with ChildSet(cproc.Process) as kids:
            kid = kids.start(_ping_pong_putter, q, to_parent_w, from_parent_r, 300)
            for i in range(300):
                assert to_parent_r.poll(10), f"round {i}: the child did not put"
                assert to_parent_r.recv() == i
                # no waiting: the child's put has returned, the item is there
                assert q.qsize() == 1, f"round {i}: qsize {q.qsize()}"
                assert q.empty() is False
                assert q.get_nowait() == ("item", i)
                assert q.qsize() == 0 and q.empty() is True
                from_parent_w.send("next")
            assert kid.result() == 300
            assert kid.join() == 0
    finally:
        for c in (to_parent_r, to_parent_w, from_parent_r, from_parent_w):
            c.close()


def _put_then_exit(q, n, how):
    for i in range(n):
        q.put(("x", i))
    if how == "os._exit":
        os._exit(0)
    if how == "SIGKILL":
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue", "SimpleQueue"])
@pytest.mark.parametrize("how", ["return", "os._exit", "SIGKILL"])
def test_nothing_lost_when_the_putter_exits_at_once(cproc, new, how, kind):
    q = new(getattr(cproc, kind))
    n = 10_000 if kind != "SimpleQueue" else 2_000
    p = cproc.Process(target=_put_then_exit, args=(q, n, how), daemon=True)
    p.start()
    try:
        p.join(30)
        assert p.exitcode == (-signal.SIGKILL if how == "SIGKILL" else 0)
    finally:
        if p.exitcode is None:
            p.kill()
            p.join(5)
        p.close()
    if kind == "SimpleQueue":
        got = []
        while len(got) < n and not q.empty():
            got.append(q.get())
        assert q.empty() is True
    else:
        assert q.qsize() == n
        got = [q.get_nowait() for _ in range(n)]
        assert q.qsize() == 0
    assert len(got) == n and got == [("x", i) for i in range(n)]


# --------------------------------------------------------------------------
# put_many / get_many


def test_get_many_returns_up_to_max_items_in_order(cproc, new):
    q = new(cproc.Queue)
    q.put_many(range(10))
    assert q.qsize() == 10
    assert q.get_many(3) == [0, 1, 2]
    assert q.get_many(max_items=4, block=False) == [3, 4, 5, 6]
    assert q.get_many(100, True, 5) == [7, 8, 9]
    assert q.qsize() == 0
    q.put("one")
    got = q.get_many(10)
    assert type(got) is list and got == ["one"]
    q.put_many([1, 2])
    assert q.get_many(1) == [1]
    assert q.get_many(10 ** 9) == [2]


def test_put_many_accepts_any_iterable(cproc, new):
    q = new(cproc.Queue)
    assert q.put_many([Payload(1, [])]) is None
    q.put_many((x for x in ("g1", "g2")))
    q.put_many({"only": 1})
    q.put_many(iter(OBJECTS))
    q.put_many([])
    assert q.qsize() == 4 + len(OBJECTS)
    assert q.get_many(4) == [Payload(1, []), "g1", "g2", "only"]
    got = q.get_many(len(OBJECTS) + 5, timeout=10)
    assert mismatches(got, OBJECTS) == []


def test_put_many_and_put_interleave_in_order(cproc, new):
    q = new(cproc.Queue)
    expected = []
    for i in range(50):
        q.put(("single", i))
        batch = [("batch", i, j) for j in range(i % 7)]
        q.put_many(batch)
        expected += [("single", i)] + batch
    got = []
    while q.qsize():
        got += q.get_many(13) if len(got) % 2 else [q.get_nowait()]
    assert got == expected


def test_get_many_on_an_empty_queue(cproc, new):
    q = new(cproc.Queue)
    elapsed = timed_raise(queue.Empty, q.get_many, 5, block=False)
    assert elapsed < 1.0
    assert_waited(timed_raise(queue.Empty, q.get_many, 5, timeout=0.2), 0.2)
    assert_waited(timed_raise(queue.Empty, q.get_many, 5, True, 0.3), 0.3)


@pytest.mark.parametrize("max_items", [0, -1, -(2**40)])
def test_get_many_max_items_below_one(cproc, new, max_items):
    q = new(cproc.Queue)
    q.put_many([1, 2])
    with pytest.raises(ValueError):
        q.get_many(max_items)
    with pytest.raises(ValueError):
        q.get_many(max_items, block=False)
    assert q.qsize() == 2
    assert q.get_many(5) == [1, 2]
    t0 = time.monotonic()
    with pytest.raises(ValueError):
        q.get_many(max_items)  # on an empty queue: at once, no blocking
    assert time.monotonic() - t0 < 1.0


def test_get_many_waits_for_one_item(cproc, new):
    q = new(cproc.Queue)
    task = ThreadTask(q.get_many, 10)
    wait_blocked(task)
    assert task.is_alive(), "get_many on an empty queue did not block"
    q.put_many(["a", "b", "c"])
    got = task.result(10)
    assert 1 <= len(got) <= 3 and got == ["a", "b", "c"][:len(got)]
    rest = q.get_many(10, block=False) if len(got) < 3 else []
    assert got + rest == ["a", "b", "c"]
    task = ThreadTask(q.get_many, 10, True, 30)
    wait_blocked(task)
    assert task.is_alive()
    q.put("d")
    assert task.result(10) == ["d"]


def test_put_many_is_all_or_nothing(cproc, new):
    q = new(cproc.Queue)
    q.put("before")
    with pytest.raises(TypeError, match="cannot pickle"):
        q.put_many(["a", threading.Lock(), "c"])
    with pytest.raises(_pickle_error(MODULE_LAMBDA)):
        q.put_many(["a", "b", MODULE_LAMBDA])
    assert q.qsize() == 1
    q.put("after")
    assert q.get_many(10) == ["before", "after"]


def test_put_many_iterable_raising_puts_nothing(cproc, new):
    q = new(cproc.Queue)

    def items():
        yield 1
        yield 2
        raise CustomError("iteration failed")

    with pytest.raises(CustomError):
        q.put_many(items())
    assert q.qsize() == 0 and q.empty() is True


def test_put_many_on_a_bounded_queue(cproc, new):
    q = new(cproc.Queue, 5)
    q.put_many([1, 2, 3])
    assert q.qsize() == 3
    elapsed = timed_raise(queue.Full, q.put_many, ["a", "b", "c"], block=False)
    assert elapsed < 1.0
    assert q.qsize() == 3  # nothing of the refused batch was put
    assert_waited(timed_raise(queue.Full, q.put_many, ["a", "b", "c"], timeout=0.2), 0.2)
    assert q.qsize() == 3
    q.put_many(["a", "b"], block=False)
    assert q.full() is True
    with pytest.raises(queue.Full):
        q.put_many(["z"], block=False)
    assert q.get_many(10) == [1, 2, 3, "a", "b"]


@pytest.mark.parametrize("block", [True, False])
def test_put_many_larger_than_maxsize_raises_at_once(cproc, new, block):
    q = new(cproc.Queue, 5)
    for items in ([0] * 6, range(100)):
        t0 = time.monotonic()
        with pytest.raises(ValueError):
            q.put_many(items, block)  # even on an empty queue: it can never fit
        assert time.monotonic() - t0 < 1.0
    assert q.qsize() == 0
    q.put_many(range(5), block)  # exactly maxsize fits
    assert q.get_many(10) == [0, 1, 2, 3, 4]


def test_put_many_waits_for_room_for_all_items(cproc, new):
    q = new(cproc.Queue, 4)
    q.put_many(["a", "b", "c"])
    task = ThreadTask(q.put_many, ["x", "y", "z"])
    wait_blocked(task)
    assert task.is_alive(), "put_many did not wait for room"
    assert q.get_nowait() == "a"  # room for 2 of the 3
    wait_blocked(task)
    assert task.is_alive(), "put_many put a batch that did not fit"
    assert q.qsize() == 2
    assert q.get_nowait() == "b"  # room for 3
    task.result(10)
    assert q.qsize() == 4 and q.full() is True
    assert q.get_many(10) == ["c", "x", "y", "z"]


def test_joinable_put_many_counts_every_item(cproc, new):
    jq = new(cproc.JoinableQueue)
    jq.put_many(["a", "b", "c"])
    assert jq.get_many(3) == ["a", "b", "c"]
    joiner = ThreadTask(jq.join)
    jq.task_done()
    jq.task_done()
    wait_blocked(joiner)
    assert joiner.is_alive(), "join() returned with a task of the batch unfinished"
    jq.task_done()
    assert joiner.result(10) is None
    with raises_exact(ValueError, "task_done() called too many times"):
        jq.task_done()
    with pytest.raises(TypeError):
        jq.put_many([1, threading.Lock()])
    with raises_exact(ValueError, "task_done() called too many times"):
        jq.task_done()  # the refused batch was not counted


def test_put_many_get_many_across_processes(cproc, new):
    q = new(cproc.Queue, 500)
    with ChildSet(cproc.Process) as kids:
        cons = [kids.start(_stress_consumer, q, 2, 50) for _ in range(2)]
        prods = [kids.start(_stress_producer, q, p, 3000, 37) for p in range(2)]
        for k in prods:
            assert k.result(30) == 3000
        q.put_many([None, None])
        results = [k.result(30) for k in cons]
        for k in prods + cons:
            assert k.join() == 0
    assert q.qsize() == 0
    check_stress(results, 2, 3000)


# --------------------------------------------------------------------------
# big messages: put never blocks on an unbounded queue


@pytest.mark.timeout(120)
def test_single_256MiB_message(cproc, new):
    q = new(cproc.Queue)
    data = os.urandom(256 * MiB)
    task = ThreadTask(q.put, data)
    assert_finishes(task, q, "put of a 256 MiB message", timeout=60)
    assert q.qsize() == 1 and q.empty() is False
    got = q.get(timeout=60)
    assert type(got) is bytes and len(got) == len(data)
    assert got == data
    del got
    assert q.qsize() == 0


def _numbered_block(base, i):
    """8 MiB: the index at both ends of a shared random middle."""
    tag = i.to_bytes(8, "little")
    return tag + base + tag


@pytest.mark.timeout(120)
def test_512MiB_outstanding_with_no_reader(cproc, new):
    q = new(cproc.Queue)
    base = os.urandom(8 * MiB - 16)
    count = 64

    def put_all():
        for i in range(count):
            q.put(_numbered_block(base, i))

    assert_finishes(ThreadTask(put_all), q, "64 puts of 8 MiB", timeout=90)
    assert q.qsize() == count
    for i in range(count):
        got = q.get(timeout=30)
        assert type(got) is bytes and len(got) == 8 * MiB, f"item {i}"
        assert got[:8] == got[-8:] == i.to_bytes(8, "little"), f"item {i} out of order"
        assert got == _numbered_block(base, i), f"item {i} corrupt"
    assert q.qsize() == 0 and q.empty() is True


@pytest.mark.timeout(120)
def test_many_small_items_outstanding_with_no_reader(cproc, new):
    q = new(cproc.Queue)

    def put_all():
        for i in range(200_000):
            q.put(i)

    assert_finishes(ThreadTask(put_all), q, "200000 small puts", timeout=90)
    assert q.qsize() == 200_000
    got = []
    while len(got) < 200_000:
        got += q.get_many(10_000, timeout=10)
    assert got == list(range(200_000))


def test_simple_queue_put_never_blocks(cproc, new):
    sq = new(cproc.SimpleQueue)
    items = [bytes([i]) * (256 * 1024) for i in range(40)]  # 10 MiB

    def put_all():
        for item in items:
            sq.put(item)

    task = ThreadTask(put_all)
    if not task.join(30):
        while task.is_alive() and not sq.empty():
            sq.get()
        task.join(10)
        raise AssertionError("SimpleQueue.put blocked with no reader")
    task.result(0)
    got = [sq.get() for _ in items]
    assert got == items
    assert sq.empty() is True


# --------------------------------------------------------------------------
# large buffers


def _buffers():
    data = random.Random(3).randbytes(64 * MiB)
    return {
        "bytes 64 MiB": data,
        "bytearray 64 MiB": bytearray(data),
        "bytes 1 byte": b"\x01",
        "bytearray empty": bytearray(),
    }


def test_large_bytes_and_bytearray(cproc, new):
    q = new(cproc.Queue)
    objs = _buffers()
    for obj in objs.values():
        q.put(obj)
    for name, obj in objs.items():
        got = q.get(timeout=30)
        assert type(got) is type(obj), name
        assert got == obj, name
    # a bytearray arrives as a new, writable object
    ba = bytearray(b"abc")
    q.put(ba)
    got = q.get(timeout=10)
    assert got is not ba
    got[0] = ord("z")
    assert ba == b"abc"


def _memoryviews():
    raw = random.Random(4).randbytes(16 * MiB)
    return {
        "readonly bytes 16 MiB": memoryview(raw),
        "readonly cast i (1024, 4096)": memoryview(raw).cast("i", (1024, 4096)),
        "writable bytearray 16 MiB": memoryview(bytearray(raw)),
        "writable cast d (256, 8192)": memoryview(bytearray(raw)).cast("d", (256, 8192)),
        "readonly small H": memoryview(array.array("H", range(100)).tobytes()).cast("H"),
        "writable array q": memoryview(array.array("q", range(-50, 50))),
        "empty": memoryview(b""),
    }


def test_memoryview_round_trip(cproc, new):
    q = new(cproc.Queue)
    views = _memoryviews()
    for mv in views.values():
        q.put(mv)
    for name, mv in views.items():
        got = q.get(timeout=30)
        assert type(got) is memoryview, f"{name}: arrived as {type(got).__name__}"
        assert (got.format, got.shape, got.itemsize) == (mv.format, mv.shape, mv.itemsize), name
        assert got.tobytes() == mv.tobytes(), name
        if mv.readonly:
            assert got.readonly is True, f"{name}: a readonly memoryview arrived writable"


def _arrays():
    rng = numpy.random.default_rng(5)
    big = rng.standard_normal((2048, 2048))  # 32 MiB, C order
    fortran = numpy.asfortranarray(rng.integers(-1000, 1000, size=(1500, 700), dtype=numpy.int32))
    return {
        "float64 2048x2048 C": big,
        "int32 Fortran": fortran,
        "uint8 3-D": rng.integers(0, 255, size=(64, 64, 3), dtype=numpy.uint8),
        "complex128": (rng.standard_normal(1000) + 1j * rng.standard_normal(1000)),
        "bool": rng.integers(0, 2, size=5000).astype(bool),
        "strided view": big[::3, 1::2],
        "0-d": numpy.array(3.5),
        "empty": numpy.zeros((0, 4), dtype=numpy.float32),
        "structured": numpy.array([(1, 2.5), (3, -1.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
        "big-endian": numpy.arange(1000, dtype=">i8"),
    }


def _same_array(got, arr):
    assert type(got) is numpy.ndarray
    assert got.dtype == arr.dtype and got.shape == arr.shape
    if arr.flags.f_contiguous and not arr.flags.c_contiguous:
        assert got.flags.f_contiguous, "a Fortran-ordered array lost its order"
    assert numpy.array_equal(got, arr)


@needs_numpy
def test_numpy_round_trip(cproc, new):
    q = new(cproc.Queue)
    arrays = _arrays()
    for arr in arrays.values():
        q.put(arr)
    for name, arr in arrays.items():
        got = q.get(timeout=30)
        _same_array(got, arr)
        assert got.flags.writeable is True, f"{name}: arrived read-only from a writable array"
        got[...] = 0  # and writing to it does not touch the original
    assert numpy.array_equal(arrays["uint8 3-D"], _arrays()["uint8 3-D"])


def _put_buffers(q):
    objs = {"bytes": random.Random(3).randbytes(32 * MiB),
            "bytearray": bytearray(random.Random(6).randbytes(8 * MiB)),
            "memoryview": memoryview(random.Random(7).randbytes(MiB)).cast("i", (512, 512))}
    if numpy is not None:
        objs["ndarray"] = numpy.asfortranarray(numpy.arange(4 * MiB, dtype=numpy.float64).reshape(2048, -1))
    q.put_many(list(objs.values()))
    return {name: _digest(o) for name, o in objs.items()}


def _digest(obj):
    return hashlib.sha256(obj.tobytes() if hasattr(obj, "tobytes") else bytes(obj)).hexdigest()


def test_large_buffers_from_a_child(cproc, new):
    q = new(cproc.Queue)
    with ChildSet(cproc.Process) as kids:
        kid = kids.start(_put_buffers, q)
        digests = kid.result(60)
        assert kid.join() == 0
    got = q.get_many(10, timeout=10)
    assert len(got) == len(digests) and q.qsize() == 0
    by_name = dict(zip(digests, got))
    assert type(by_name["bytes"]) is bytes and type(by_name["bytearray"]) is bytearray
    assert type(by_name["memoryview"]) is memoryview and by_name["memoryview"].shape == (512, 512)
    if numpy is not None:
        arr = by_name["ndarray"]
        assert type(arr) is numpy.ndarray and arr.shape == (2048, 2048) and arr.flags.f_contiguous
        assert arr.flags.writeable is True
    for name, obj in by_name.items():
        assert _digest(obj) == digests[name], name


# --------------------------------------------------------------------------
# queues travel: through a Pipe to a running process, to spawn children


def _queue_server(conn, kind):
    """Running before the queues exist: gets them through conn."""
    q_in, q_out = conn.recv()
    for _ in range(3):
        item = get_within(q_in, 30)
        if kind == "JoinableQueue":
            q_in.task_done()
        q_out.put(("echo", item))
    mine = getattr(importlib.import_module("cproc"), kind)()
    conn.send(mine)
    mine.put("made by the child")
    if not conn.poll(30):
        raise AssertionError("the parent did not answer")
    reply = conn.recv()
    return reply, get_within(mine, 10)


@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue", "JoinableQueue"])
def test_queue_through_a_pipe_to_a_running_child(cproc, new, kind):
    a, b = cproc.Pipe()
    try:
        with ChildSet(cproc.Process) as kids:
            kid = kids.start(_queue_server, b, kind)
            q_in, q_out = new(getattr(cproc, kind)), new(getattr(cproc, kind))
            a.send((q_in, q_out))
            for i in range(3):
                q_in.put(("hello", i))
                assert get_within(q_out) == ("echo", ("hello", i))
            if kind == "JoinableQueue":
                assert ThreadTask(q_in.join).result(10) is None
            assert a.poll(30), "the child did not send its queue"
            theirs = a.recv()
            assert type(theirs) is getattr(importlib.import_module("cproc.queues"), kind)
            assert get_within(theirs) == "made by the child"
            theirs.put("answer through the child's queue")
            a.send("done")
            assert kid.result(10) == ("done", "answer through the child's queue")
            assert kid.join() == 0
            del theirs
    finally:
        a.close()
        b.close()


def test_queue_pickle_round_trip_in_process(cproc, new):
    q = new(cproc.Queue, 3)
    copy = pickle.loads(pickle.dumps(q))
    copy.put("via the copy")
    assert q.qsize() == 1
    assert q.get_nowait() == "via the copy"
    q.put_many([1, 2, 3])
    assert copy.full() is True
    assert copy.get_many(5) == [1, 2, 3]


def _spawn_echo(q_in, q_out, kind, n):
    for _ in range(n):
        item = get_within(q_in, 30)
        if kind == "JoinableQueue":
            q_in.task_done()
        q_out.put(("spawned", item))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["Queue", "SimpleQueue", "JoinableQueue"])
def test_queue_as_an_argument_to_a_spawn_child(cproc, new, kind):
    q_in, q_out = new(getattr(cproc, kind)), new(getattr(cproc, kind))
    p = cproc.get_context("spawn").Process(target=_spawn_echo, args=(q_in, q_out, kind, 5), daemon=True)
    p.start()
    try:
        for i in range(5):
            q_in.put(Payload(i, [b"x" * i]))
        got = [get_within(q_out, 60) for _ in range(5)]
        assert got == [("spawned", Payload(i, [b"x" * i])) for i in range(5)]
        if kind == "JoinableQueue":
            assert ThreadTask(q_in.join).result(10) is None
        p.join(30)
        assert p.exitcode == 0
    finally:
        if p.exitcode is None:
            p.kill()
            p.join(5)
        p.close()


# --------------------------------------------------------------------------
# a child killed while blocked does not disturb the others


def _block_in(q, ready, call):
    ready.set()
    if call == "get()":
        q.get()
    elif call == "get(timeout=60)":
        q.get(timeout=60)
    elif call == "get_many":
        q.get_many(10)
    elif call == "put(full)":
        q.put("never fits")
    elif call == "put_many(full)":
        q.put_many(["never", "fits"])
    return "returned"


def _get_one(q):
    return q.get(timeout=30)


@pytest.mark.parametrize("call", ["get()", "get(timeout=60)", "get_many", "put(full)", "put_many(full)"])
def test_child_killed_while_blocked_does_not_disturb_the_queue(cproc, new, call):
    full = call.startswith("put")
    q = new(cproc.Queue, 2)
    if full:
        q.put_many(["a", "b"])
    ready = FORK.Event()
    with ChildSet(cproc.Process) as kids:
        victim = kids.start(_block_in, q, ready, call)
        assert ready.wait(10)
        wait_blocked(victim)
        assert not victim.reported(), f"{call} returned"
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.join() == -signal.SIGKILL
        # the queue works for the others, at once
        if full:
            assert q.qsize() == 2 and q.full() is True
            assert q.get(timeout=5) == "a"
            q.put("c", timeout=5)
            assert q.get_many(5, timeout=5) == ["b", "c"]
        assert q.qsize() == 0 and q.empty() is True
        q.put("x", timeout=5)
        assert q.get(timeout=5) == "x"
        q.put_many([1, 2], timeout=5)
        assert q.get_many(5, timeout=5) == [1, 2]
        # a new child blocked in get is woken by a put
        other = kids.start(_get_one, q)
        wait_blocked(other)
        q.put("for the other child")
        assert other.result(10) == "for the other child"
        assert other.join() == 0
    assert q.qsize() == 0


# --------------------------------------------------------------------------
# stress: 4 producers x 4 consumers, a million messages


def _stress_producer(q, pid, n, batch):
    if batch:
        for start in range(0, n, batch):
            q.put_many([(pid, i) for i in range(start, min(n, start + batch))])
    else:
        put = q.put
        for i in range(n):
            put((pid, i))
    return n


def _stress_consumer(q, producers, batch):
    seqs = [array.array("i") for _ in range(producers)]
    if batch:
        while True:
            items = q.get_many(batch, timeout=60)
            for k, item in enumerate(items):
                if item is None:
                    rest = items[k + 1:]
                    if any(x is not None for x in rest):
                        raise AssertionError(f"an item after a sentinel: {rest[:5]}")
                    if rest:
                        q.put_many(rest)  # the other consumers' sentinels
                    return [a.tobytes() for a in seqs]
                seqs[item[0]].append(item[1])
    get = q.get
    while True:
        item = get(timeout=60)
        if item is None:
            return [a.tobytes() for a in seqs]
        seqs[item[0]].append(item[1])


def check_stress(results, producers, n):
    """results: per consumer, per producer, the seqs (array 'i' bytes) in the
    order received.  FIFO per producer in each stream, nothing lost or doubled."""
    streams = [[array.array("i", b) for b in r] for r in results]
    for c, per_producer in enumerate(streams):
        for p, seqs in enumerate(per_producer):
            assert all(a < b for a, b in zip(seqs, seqs[1:])), \
                f"consumer {c} got producer {p}'s messages out of order"
    for p in range(producers):
        merged = sorted(i for per_producer in streams for i in per_producer[p])
        assert len(merged) == n, f"producer {p}: {len(merged)} of {n} messages arrived"
        assert merged == list(range(n)), f"producer {p}: lost or duplicated messages"


@pytest.mark.timeout(240)
@pytest.mark.parametrize("variant", ["put/get", "put/get bounded", "put_many/get_many"])
def test_stress_million_messages(cproc, new, variant):
    producers, consumers, total = 4, 4, 1_000_000
    n = total // producers
    batch = 250 if variant == "put_many/get_many" else 0
    q = new(cproc.Queue, 1000 if variant == "put/get bounded" else 0)
    with ChildSet(cproc.Process) as kids:
        cons = [kids.start(_stress_consumer, q, producers, batch) for _ in range(consumers)]
        prods = [kids.start(_stress_producer, q, p, n, batch) for p in range(producers)]
        for k in prods:
            assert k.result(200) == n
        for _ in cons:
            q.put(None)
        results = [k.result(200) for k in cons]
        for k in prods + cons:
            assert k.join() == 0
    assert q.qsize() == 0
    check_stress(results, producers, n)
