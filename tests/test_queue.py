"""Queue, SimpleQueue, JoinableQueue: differential tests against multiprocessing
(Python 3.11), then cproc's own promises.

Differential tests (fixture ``mp``: multiprocessing's fork context, or cproc;
select a side with ``-k multiprocessing`` or ``-k cproc``) assert that the user
sees what multiprocessing 3.11 shows: return values, exception types and
messages, FIFO order, blocking and waking.  The classes are ``mp.Queue``,
``mp.SimpleQueue``, ``mp.JoinableQueue``; ``<impl>.queues`` holds them.

What multiprocessing 3.11 does, and what the expectations encode:

* ``Queue(maxsize)``: a pipe, a reader Lock, a writer Lock and a
  BoundedSemaphore(maxsize) counting the items.  ``maxsize <= 0`` means
  SEM_VALUE_MAX (unbounded in practice); ``maxsize`` is compared with 0 first
  (``'a'`` or ``None``: TypeError), then given to the semaphore as a C int
  (``2.5``: TypeError; ``2**31``: OverflowError).
* ``put`` acquires the semaphore (``queue.Full`` when it cannot: non-blocking,
  or after ``timeout``), appends the object to a buffer and returns; a feeder
  thread pickles it and writes it to the pipe later.  So ``qsize()`` (the
  semaphore) and ``full()`` are exact when ``put`` returns, but ``empty()``
  (a poll of the pipe) and a non-blocking ``get`` may not see the item yet,
  and an object that cannot be pickled is reported by the feeder thread (a
  traceback on stderr) and dropped: ``put`` itself succeeds.  A process that
  ends with ``os._exit`` loses what its feeder thread had not written.  Only
  cproc's tests assert those instants.
* ``get`` reads one message under the reader lock; non-blocking or timed
  (``timeout=-1`` behaves as 0): ``queue.Empty``.  A bad timeout type is a
  TypeError.  A child killed inside ``get`` keeps the reader lock forever: the
  others hang (cproc's tests cover that case).
* ``close()``: ``put``/``get``/``put_nowait``/``get_nowait`` then raise
  ``ValueError(f"Queue {q!r} is closed")``; ``qsize()``/``full()`` still
  answer (``empty()`` too while the feeder thread has not closed the reader);
  ``join_thread()`` asserts the queue is closed
  (``AssertionError(f"Queue {q!r} not closed")``); ``close`` and
  ``cancel_join_thread`` may be repeated.  repr is object's default.
* ``JoinableQueue(Queue)``: each ``put`` counts an unfinished task;
  ``task_done()`` beyond the count raises
  ``ValueError('task_done() called too many times')``; ``join()`` returns when
  the count is zero, whichever process calls ``task_done``.
* ``SimpleQueue``: a locked pipe; ``put`` pickles in the caller (so a pickling
  error comes from ``put``) and writes at once (so it blocks once the pipe
  buffer, 64 KiB, is full and nobody reads).  After ``close()``, ``put``,
  ``get`` and ``empty`` raise ``OSError('handle is closed')``.
  ``SimpleQueue[int]`` is a ``types.GenericAlias``.

cproc's promises (fixture ``cproc``): ``put`` pickles in the caller, so a
pickling error comes from ``put`` and leaves the queue unchanged, and the item
is in shared memory when ``put`` returns (exact ``qsize``/``empty``/
``get_nowait`` at once, in any process; nothing lost when the putter exits,
even by ``os._exit`` or SIGKILL); an unbounded ``put`` and ``SimpleQueue.put``
never block (a 256 MiB message, 512 MiB outstanding with no reader);
``put_many``/``get_many``; large buffers (bytes, bytearray, memoryview, numpy)
round-trip; queues pickle to running and spawn children; a child SIGKILLed in
``get`` does not disturb the others; a million messages between 4 producers
and 4 consumers lose, duplicate and reorder nothing.

Blocking behaviour (the GIL released while blocked, Ctrl+C) is tested in fresh
subprocesses, so that a call stuck with the GIL held cannot hang the run.
Children are ``mp.Process`` (multiprocessing's fork context, or cproc's
Process); they report through a multiprocessing (stdlib) pipe, so that a bug
in cproc cannot hide in the report.
"""

import array
import hashlib
import importlib
import os
import pickle
import queue
import random
import re
import signal
import sys
import threading
import time
import types

import multiprocessing
import pytest

from helpers.blocking import proc_state, wait_until
from helpers.children import FORK, ChildSet, ThreadTask
from helpers.scripts import (CTRL_C_SCRIPT, GIL_SCRIPT, check_ctrl_c_script, check_gil_script,
    popen_impl_script)

pytestmark = pytest.mark.timeout(60)

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is a test dependency
    numpy = None

needs_numpy = pytest.mark.skipif(numpy is None, reason="numpy is not installed")

MiB = 1 << 20


# --------------------------------------------------------------------------
# objects that travel (module level: pickled by reference to this module)


class Payload:
    """A user class."""

    def __init__(self, x, items):
        self.x = x
        self.items = items

    def __eq__(self, other):
        return type(other) is Payload and (self.x, self.items) == (other.x, other.items)

    def __repr__(self):
        return f"Payload({self.x!r}, {self.items!r})"


class CustomError(Exception):
    """A user exception class."""


OBJECTS = [
    None, True, False, 0, -1, 2**100, -(2**70), 1.5, -0.0, 3 + 4j,
    "", "héllo ☃ \U0001f600", "x" * 10000,
    b"", b"\x00\xff" * 50, bytearray(b"abc"), bytearray(),
    [], [1, [2, [3]]], (), (1, "a", None), {"k": [1, 2], 3: {"nested": ()}},
    {1, 2, 3}, frozenset({"a"}), range(3, 30, 3),
    Payload(7, ["a", b"b", None]),
    ValueError("boom", 3), CustomError("mine"), KeyError("k"),
    random.Random(1).randbytes(4 * MiB),
    bytearray(random.Random(2).randbytes(2 * MiB)),
]


def same(got, expected):
    """Equal, with the same type; exceptions by type and args."""
    if type(got) is not type(expected):
        return False
    if isinstance(expected, BaseException):
        return got.args == expected.args
    return got == expected


def mismatches(got, expected):
    """Readable list of the positions where got and expected differ."""
    if len(got) != len(expected):
        return [f"got {len(got)} items, expected {len(expected)}"]
    return [f"#{i}: got {_short(g)}, expected {_short(e)}"
            for i, (g, e) in enumerate(zip(got, expected)) if not same(g, e)]


def _short(obj):
    text = f"{type(obj).__name__} {obj!r}"
    return text if len(text) < 120 else text[:117] + "..."


# --------------------------------------------------------------------------
# helpers


def queues_module(mp):
    """multiprocessing.queues or cproc.queues."""
    return importlib.import_module(mp.name + ".queues")


def _timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t0


def _timed_raise(exc_type, fn, *args, **kwargs):
    """fn(...) must raise exactly exc_type; the seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    elapsed = time.monotonic() - t0
    assert type(info.value) is exc_type, f"raised {type(info.value).__name__}: {info.value}"
    return elapsed


def _assert_waited(elapsed, timeout):
    assert elapsed >= timeout - 0.01, f"returned after {elapsed:.3f}s, before the {timeout}s timeout"
    assert elapsed < 2.0, f"returned after {elapsed:.3f}s for a {timeout}s timeout"


def raises_exact(exc_type, message=None):
    """A context manager: pytest.raises, type exactly exc_type, str(exc) == message."""
    return _RaisesExact(exc_type, message)


class _RaisesExact:
    def __init__(self, exc_type, message):
        self.exc_type, self.message = exc_type, message

    def __enter__(self):
        self._cm = pytest.raises(self.exc_type)
        self.info = self._cm.__enter__()
        return self.info

    def __exit__(self, *exc):
        suppressed = self._cm.__exit__(*exc)
        value = self.info.value
        assert type(value) is self.exc_type, f"raised {type(value).__name__}: {value}"
        if self.message is not None:
            assert str(value) == self.message
        return suppressed


def get_within(q, timeout=10.0):
    """q.get(), failing instead of hanging when nothing comes (SimpleQueue has
    no timeout: wait until it is not empty, then get)."""
    if hasattr(q, "qsize"):
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"nothing arrived within {timeout}s") from None
    assert wait_until(lambda: not q.empty(), timeout), f"nothing arrived within {timeout}s"
    return q.get()


def drain(q, limit=1_000_000):
    """Take what a Queue still counts (closed: nothing); the items."""
    items = []
    while len(items) < limit:
        try:
            if q.qsize() <= 0:
                break
            items.append(q.get(timeout=1))
        except (queue.Empty, ValueError, OSError):
            break
    return items


def _dispose(q):
    """Teardown: empty (so multiprocessing's feeder can finish), close, join.

    In a daemon thread, given 10 s: multiprocessing's get blocks for good on a
    message whose writer was killed half-way, and join_thread on a feeder that
    cannot write."""

    def dispose():
        if hasattr(q, "qsize"):
            drain(q)
            q.close()
            q.join_thread()
        else:
            q.close()

    ThreadTask(dispose, name="dispose-queue").join(10)


@pytest.fixture
def new():
    """new(constructor, *args) -> the queue; emptied and closed at teardown."""
    made = []

    def make(constructor, *args, **kwargs):
        q = constructor(*args, **kwargs)
        made.append(q)
        return q

    yield make
    for q in reversed(made):
        _dispose(q)
    made.clear()  # the fixture's value (make) outlives this teardown


def assert_finishes(task, q, what, timeout=30.0):
    """task (a ThreadTask putting into q with no reader) must finish within
    timeout.  If it does not, q is drained from this thread so that the
    stuck put can end, and the test fails."""
    if task.join(timeout):
        task.result(0)
        return
    drain(q)
    task.join(10)
    raise AssertionError(f"{what} blocked with no reader (did not return within {timeout}s)")


def sleeping(pid):
    """True once the process's main thread is asleep (state S)."""
    return proc_state(pid) == "S"


@pytest.fixture(scope="module", autouse=True)
def _warm_up_queues():
    """Create, use, pickle and close one queue of each kind per implementation
    before the first test, so that any once-per-process state (a helper
    thread's module, an arena segment) is in every test's leak baseline."""
    impls = [multiprocessing.get_context("fork")]
    try:
        import cproc

        impls.append(cproc)
    except ImportError:
        pass
    for ns in impls:
        try:
            q = ns.Queue()
            q.put(1)
            q.get(timeout=5)
            jq = ns.JoinableQueue()
            jq.put(1)
            jq.get(timeout=5)
            jq.task_done()
            sq = ns.SimpleQueue()
            sq.put(1)
            sq.get()
            if ns is not impls[0]:
                pickle.loads(pickle.dumps((q, jq, sq)))
            for x in (q, jq):
                x.close()
                x.join_thread()
            sq.close()
            del q, jq, sq
        except Exception:  # noqa: BLE001 - not there yet: the tests report it
            pass
    yield


# ==========================================================================
# A. differential: construction, types, repr


def test_classes_and_types(mp, new):
    qm = queues_module(mp)
    q, sq, jq = new(mp.Queue), new(mp.SimpleQueue), new(mp.JoinableQueue)
    assert type(q) is qm.Queue
    assert type(sq) is qm.SimpleQueue
    assert type(jq) is qm.JoinableQueue
    assert queue.Empty is multiprocessing.queues.Empty and queue.Full is multiprocessing.queues.Full


def test_joinable_queue_is_a_queue(mp, new):
    qm = queues_module(mp)
    assert issubclass(qm.JoinableQueue, qm.Queue)
    assert isinstance(new(mp.JoinableQueue), qm.Queue)


def test_repr_is_the_default_object_repr(mp, new):
    for kind in ("Queue", "SimpleQueue", "JoinableQueue"):
        q = new(getattr(mp, kind))
        pattern = rf"<{mp.name}\.queues\.{kind} object at 0x[0-9a-f]+>"
        assert re.fullmatch(pattern, repr(q)), repr(q)
        assert f"{id(q):x}" in repr(q)


def test_simple_queue_class_getitem(mp):
    qm = queues_module(mp)
    alias = qm.SimpleQueue[int]
    assert type(alias) is types.GenericAlias
    assert alias.__origin__ is qm.SimpleQueue and alias.__args__ == (int,)


@pytest.mark.parametrize("maxsize, exc_type", [("a", TypeError), (None, TypeError), (2.5, TypeError),
                                               (2**31, OverflowError), (2**64, OverflowError)],
                         ids=["str", "None", "float", "2**31", "2**64"])
@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_bad_maxsize(mp, kind, maxsize, exc_type):
    with pytest.raises(exc_type) as info:
        getattr(mp, kind)(maxsize)
    assert type(info.value) is exc_type, f"raised {type(info.value).__name__}: {info.value}"


@pytest.mark.parametrize("maxsize", [0, -1, -(2**40)])
def test_maxsize_zero_or_negative_is_unbounded(mp, new, maxsize):
    q = new(mp.Queue, maxsize)
    for i in range(300):
        q.put_nowait(i)
        assert q.full() is False
    assert q.qsize() == 300
    assert [q.get(timeout=10) for _ in range(300)] == list(range(300))
    assert q.qsize() == 0


def test_default_maxsize_is_unbounded(mp, new):
    for q in (new(mp.Queue), new(mp.JoinableQueue), new(mp.Queue, maxsize=0)):
        for i in range(200):
            q.put(i, block=False)
        assert q.full() is False and q.qsize() == 200
        assert [q.get(timeout=10) for _ in range(200)] == list(range(200))


# ==========================================================================
# put / get


def test_put_get_fifo(mp, new):
    q = new(mp.Queue)
    assert q.empty() is True and q.qsize() == 0 and q.full() is False
    for i in range(5000):
        q.put(i)
    assert q.qsize() == 5000
    assert [q.get() for _ in range(5000)] == list(range(5000))
    assert q.qsize() == 0 and q.empty() is True


def test_put_get_return_values_and_keywords(mp, new):
    q = new(mp.Queue, 4)
    assert q.put("a") is None
    assert q.put(obj="b", block=True, timeout=5) is None
    assert q.put_nowait("c") is None
    assert q.put("d", False) is None
    assert q.get() == "a"
    assert q.get(block=True, timeout=5) == "b"
    assert q.get(True, 5) == "c"
    assert wait_until(lambda: not q.empty(), 10)  # multiprocessing: the feeder thread writes it
    assert q.get_nowait() == "d"


def test_round_trip_objects(mp, new):
    q = new(mp.Queue)
    for obj in OBJECTS:
        q.put(obj)
    assert q.qsize() == len(OBJECTS)
    got = [q.get(timeout=10) for _ in OBJECTS]
    assert mismatches(got, OBJECTS) == []
    assert q.qsize() == 0 and q.empty() is True


def test_get_on_empty_raises_empty(mp, new):
    q = new(mp.Queue)
    for call in (lambda: q.get(False), lambda: q.get(block=False), q.get_nowait,
                 lambda: q.get(timeout=0), lambda: q.get(True, 0), lambda: q.get(timeout=-1),
                 lambda: q.get(False, 10)):
        elapsed = _timed_raise(queue.Empty, call)
        assert elapsed < 1.0, f"non-blocking get took {elapsed:.2f}s"


def test_get_timeout(mp, new):
    q = new(mp.Queue)
    _assert_waited(_timed_raise(queue.Empty, q.get, timeout=0.2), 0.2)
    _assert_waited(_timed_raise(queue.Empty, q.get, True, 0.3), 0.3)


def test_bad_timeout_type_raises_type_error(mp, new):
    q = new(mp.Queue)
    q.put("kept")
    assert q.get(timeout=10) == "kept"
    q.put("kept")
    for bad in ("x", [1], b"1"):
        with pytest.raises(TypeError):
            q.put("extra", True, bad)
        with pytest.raises(TypeError):
            q.get(True, bad)
        with pytest.raises(TypeError):
            q.get(timeout=bad)
    assert q.qsize() == 1  # nothing was put, nothing taken
    assert q.get(timeout=10) == "kept"
    assert q.qsize() == 0


BAD_BLOCKS = (None, 2.5, "x", [])
# 3.12 made SemLock.acquire's block a bool (any object's truth); up to 3.11 an int
BLOCK_IS_A_BOOL = sys.version_info >= (3, 12)


def _not_an_int(bad):
    """The message of the TypeError that SemLock.acquire(bad) raises up to 3.11."""
    if sys.version_info < (3, 10):
        if isinstance(bad, float):
            return "integer argument expected, got float"
        return f"an integer is required (got type {type(bad).__name__})"
    return f"'{type(bad).__name__}' object cannot be interpreted as an integer"


@pytest.mark.skipif(BLOCK_IS_A_BOOL, reason="from 3.12 block may be any object (test_block_is_a_truth_value)")
def test_block_must_be_an_int(mp, new):
    """block goes to a semaphore's acquire() in multiprocessing: an int (or
    bool); only a get without a timeout takes any true value."""
    q = new(mp.Queue)
    q.put("kept")
    for bad in BAD_BLOCKS:
        message = re.escape(_not_an_int(bad))
        with pytest.raises(TypeError, match=message):
            q.put("extra", bad)
        with pytest.raises(TypeError, match=message):
            q.put("extra", block=bad, timeout=1)
        if not bad:
            with pytest.raises(TypeError, match=message):
                q.get(bad)
        with pytest.raises(TypeError, match=message):
            q.get(bad, 1)
    assert q.qsize() == 1
    assert q.get(2.5) == "kept"            # any true block with no timeout: waits
    q.put("int block", 2)
    assert q.get(1, 5) == "int block"


@pytest.mark.skipif(not BLOCK_IS_A_BOOL, reason="up to 3.11 block must be an int (test_block_must_be_an_int)")
def test_block_is_a_truth_value(mp, new):
    """3.12: block is read as a truth value, with or without a timeout: a
    false one never waits, a true one waits up to the timeout."""
    q = new(mp.Queue)
    for bad in BAD_BLOCKS:
        if bad:
            _assert_waited(_timed_raise(queue.Empty, q.get, bad, 0.2), 0.2)
        else:
            assert _timed_raise(queue.Empty, q.get, bad, 10) < 1.0
            assert _timed_raise(queue.Empty, q.get, bad) < 1.0
    for bad in BAD_BLOCKS:
        q.put(bad, bad)                    # unbounded: never waits
    assert [q.get(2.5, 10) for _ in BAD_BLOCKS] == list(BAD_BLOCKS)
    full = new(mp.Queue, 1)
    full.put("kept", [])
    assert _timed_raise(queue.Full, full.put, "extra", None, 10) < 1.0
    _assert_waited(_timed_raise(queue.Full, full.put, "extra", "x", 0.2), 0.2)
    assert full.get("x") == "kept"


def test_lock_acquire_block_must_be_an_int(mp):
    """Up to 3.11 block must be an int; from 3.12 it is read as a truth value."""
    for name in ("Lock", "RLock", "Semaphore", "BoundedSemaphore"):
        lock = getattr(mp, name)()
        for bad in (None, 2.5, "x"):
            if BLOCK_IS_A_BOOL:
                assert lock.acquire(bad) is True
                lock.release()
                assert lock.acquire(block=bad, timeout=1) is True
                lock.release()
                continue
            with pytest.raises(TypeError, match=re.escape(_not_an_int(bad))):
                lock.acquire(bad)
            with pytest.raises(TypeError, match=re.escape(_not_an_int(bad))):
                lock.acquire(block=bad)
        assert lock.acquire(2) is True
        if BLOCK_IS_A_BOOL and name != "RLock":   # held: a false block does not wait
            t0 = time.monotonic()
            assert lock.acquire(None, 10) is False
            assert time.monotonic() - t0 < 1.0
            _assert_waited(_timed(lambda: lock.acquire("x", 0.2) is False), 0.2)
        lock.release()


def _timed(check):
    """Seconds that check() took; it must return true."""
    t0 = time.monotonic()
    assert check()
    return time.monotonic() - t0


QUEUE_METHOD_NAMES = {
    "Queue": ["put", "get", "put_nowait", "get_nowait", "qsize", "empty", "full", "close", "join_thread",
              "cancel_join_thread"],
    "JoinableQueue": ["put", "get", "task_done", "join", "qsize", "empty", "close"],
    "SimpleQueue": ["put", "get", "empty", "close"],
}


def _parameters(fn):
    """(name, default) of each parameter but self, as inspect sees them."""
    import inspect

    return [(p.name, p.default) for p in inspect.signature(fn).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("cls", list(QUEUE_METHOD_NAMES))
def test_method_signatures_match_multiprocessing(cproc, cls):
    import multiprocessing.queues

    for name in QUEUE_METHOD_NAMES[cls]:
        ours = getattr(getattr(cproc.queues, cls), name)
        theirs = getattr(getattr(multiprocessing.queues, cls), name)
        assert _parameters(ours) == _parameters(theirs), f"{cls}.{name}"


def test_put_nowait_by_keyword(mp, new):
    q = new(mp.Queue)
    assert q.put_nowait(obj="kw") is None
    assert q.get(timeout=10) == "kw"


@needs_numpy
def test_read_only_numpy_array_arrives_writable(mp, new):
    """multiprocessing pickles in band, so what arrives owns writable memory."""
    q = new(mp.Queue)
    small = numpy.frombuffer(bytes(range(80)), dtype="u1")
    large = numpy.frombuffer(bytes(8 << 20), dtype="f8")
    assert not small.flags.writeable and not large.flags.writeable
    q.put(small)
    q.put({"nested": large})
    got_small = q.get(timeout=10)
    got_large = q.get(timeout=10)["nested"]
    for got, sent in ((got_small, small), (got_large, large)):
        assert got.flags.writeable
        got += 1
        assert (got == sent + 1).all()


# ==========================================================================
# bounded queues


def test_bounded_queue_full(mp, new):
    q = new(mp.Queue, 3)
    q.put("m1")
    q.put("m2")
    assert q.full() is False and q.qsize() == 2
    q.put("m3")
    assert q.full() is True and q.qsize() == 3
    for call in (lambda: q.put("m4", False), lambda: q.put("m4", block=False), lambda: q.put_nowait("m4"),
                 lambda: q.put("m4", True, 0), lambda: q.put("m4", timeout=-1), lambda: q.put("m4", False, 10)):
        elapsed = _timed_raise(queue.Full, call)
        assert elapsed < 1.0
    assert q.qsize() == 3
    assert q.get(timeout=10) == "m1"
    assert q.full() is False and q.qsize() == 2
    q.put_nowait("m4")
    assert q.full() is True
    assert [q.get(timeout=10) for _ in range(3)] == ["m2", "m3", "m4"]
    assert q.qsize() == 0 and q.full() is False


def test_put_timeout_on_a_full_queue(mp, new):
    q = new(mp.Queue, 1)
    q.put(1)
    _assert_waited(_timed_raise(queue.Full, q.put, 2, timeout=0.2), 0.2)
    _assert_waited(_timed_raise(queue.Full, q.put, 2, True, 0.3), 0.3)
    assert q.qsize() == 1
    assert q.get(timeout=10) == 1


def test_maxsize_one_alternating(mp, new):
    q = new(mp.Queue, 1)
    for i in range(500):
        q.put(i, timeout=10)
        assert q.full() is True
        assert q.get(timeout=10) == i
        assert q.full() is False


def test_blocked_put_wakes_when_another_thread_gets(mp, new):
    q = new(mp.Queue, 2)
    q.put("a")
    q.put("b")
    task = ThreadTask(q.put, "c")
    assert not task.join(0.3), "put on a full queue did not block"
    assert q.get(timeout=10) == "a"
    task.result(10)
    assert q.qsize() == 2 and q.full() is True
    assert [q.get(timeout=10) for _ in range(2)] == ["b", "c"]


def test_blocked_get_wakes_when_another_thread_puts(mp, new):
    q = new(mp.Queue)
    task = ThreadTask(q.get)
    assert not task.join(0.3), "get on an empty queue did not block"
    q.put("v")
    assert task.result(10) == "v"
    task = ThreadTask(q.get, True, 30)
    assert not task.join(0.3)
    q.put("w")
    assert task.result(10) == "w"


def test_several_blocked_getters_each_get_one(mp, new):
    q = new(mp.Queue)
    tasks = [ThreadTask(q.get, True, 30) for _ in range(4)]
    assert not any(t.join(0.05) for t in tasks)
    for i in range(4):
        q.put(i)
    assert sorted(t.result(10) for t in tasks) == [0, 1, 2, 3]


# ==========================================================================
# close, join_thread


CLOSED_CALLS = {
    "put": lambda q: q.put(1),
    "put(timeout)": lambda q: q.put(1, timeout=1),
    "put_nowait": lambda q: q.put_nowait(1),
    "get": lambda q: q.get(),
    "get(timeout)": lambda q: q.get(timeout=1),
    "get(False)": lambda q: q.get(False),
    "get_nowait": lambda q: q.get_nowait(),
}


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_closed_queue_raises_value_error(mp, new, kind):
    q = new(getattr(mp, kind))
    assert q.close() is None
    for name, call in CLOSED_CALLS.items():
        with raises_exact(ValueError, f"Queue {q!r} is closed"):
            call(q)
    assert q.qsize() == 0
    assert q.empty() is True
    assert q.full() is False
    assert q.close() is None  # twice is fine
    assert q.join_thread() is None
    assert q.cancel_join_thread() is None


def _close_and_report_empty(q):
    q.close()
    return q.empty()


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_closed_queue_empty_after_a_put(mp, new, kind):
    """empty() on a closed queue this process has put to raises OSError("handle
    is closed") (multiprocessing: the feeder thread the first put started closes
    the reader on close(); CPython 3.13's test_closed_queue_empty_exceptions).
    Unused, or used only by the parent of a fork child, it answers."""
    q = new(getattr(mp, kind))
    q.put("x")
    assert q.get(timeout=10) == "x"
    with ChildSet() as children:
        assert children.start(_close_and_report_empty, q).result() is True
    q.close()
    q.join_thread()
    with raises_exact(OSError, "handle is closed"):
        q.empty()
    assert q.qsize() == 0
    unused = new(getattr(mp, kind))
    unused.close()
    unused.join_thread()
    assert unused.empty() is True


def test_closed_bounded_queue_with_items_still_counts(mp, new):
    q = new(mp.Queue, 2)
    q.put("a")
    q.put("b")
    q.close()
    assert q.qsize() == 2
    assert q.full() is True
    with raises_exact(ValueError, f"Queue {q!r} is closed"):
        q.get(timeout=1)
    with raises_exact(ValueError, f"Queue {q!r} is closed"):
        q.put_nowait("c")
    assert q.qsize() == 2
    assert q.join_thread() is None


def _put_one(q, item):
    q.put(item)


@pytest.mark.parametrize("kind", ["Queue", "JoinableQueue"])
def test_closed_queue_empty_when_only_another_process_put(mp, new, kind):
    """A closed queue that only another process put to still answers
    empty(), as multiprocessing's (this process started no feeder thread)."""
    make = getattr(mp, kind)
    by_child = new(make)
    child = mp.Process(target=_put_one, args=(by_child, "from the child"))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert wait_until(lambda: not by_child.empty(), 10)
    by_child.close()
    by_child.join_thread()
    assert by_child.empty() is False
    assert by_child.qsize() == 1


def test_join_thread_before_close(mp, new):
    q = new(mp.Queue)
    with raises_exact(AssertionError, f"Queue {q!r} not closed"):
        q.join_thread()
    q.put(1)
    with raises_exact(AssertionError, f"Queue {q!r} not closed"):
        q.join_thread()
    assert q.get(timeout=10) == 1
    q.close()
    assert q.join_thread() is None


def test_cancel_join_thread_then_close(mp, new):
    q = new(mp.Queue)
    assert q.cancel_join_thread() is None
    q.put("x")
    assert q.get(timeout=10) == "x"
    q.close()
    assert q.join_thread() is None


# ==========================================================================
# JoinableQueue


def test_joinable_task_done_counts(mp, new):
    jq = new(mp.JoinableQueue)
    assert ThreadTask(jq.join).result(10) is None  # nothing put: returns at once
    jq.put(1)
    jq.put(2)
    assert jq.get(timeout=10) == 1
    assert jq.get(timeout=10) == 2
    assert jq.task_done() is None
    assert jq.task_done() is None
    with raises_exact(ValueError, "task_done() called too many times"):
        jq.task_done()
    assert ThreadTask(jq.join).result(10) is None
    with raises_exact(ValueError, "task_done() called too many times"):
        jq.task_done()


def test_joinable_task_done_before_get_is_counted(mp, new):
    """task_done counts put items, not got ones."""
    jq = new(mp.JoinableQueue)
    jq.put("a")
    jq.task_done()
    with raises_exact(ValueError, "task_done() called too many times"):
        jq.task_done()
    assert ThreadTask(jq.join).result(10) is None
    assert jq.get(timeout=10) == "a"


def test_joinable_join_waits_for_every_task(mp, new):
    jq = new(mp.JoinableQueue)
    for i in range(3):
        jq.put(i)
    joiner = ThreadTask(jq.join)
    assert [jq.get(timeout=10) for _ in range(3)] == [0, 1, 2]
    jq.task_done()
    jq.task_done()
    assert not joiner.join(0.3), "join() returned with a task unfinished"
    jq.task_done()
    assert joiner.result(10) is None


def test_joinable_bounded(mp, new):
    jq = new(mp.JoinableQueue, 2)
    jq.put(1)
    jq.put(2)
    assert jq.full() is True
    with pytest.raises(queue.Full):
        jq.put_nowait(3)
    assert jq.qsize() == 2
    assert jq.get(timeout=10) == 1
    assert jq.get(timeout=10) == 2
    jq.task_done()
    jq.task_done()
    with raises_exact(ValueError, "task_done() called too many times"):
        jq.task_done()  # the refused put did not count
    assert ThreadTask(jq.join).result(10) is None


def _joinable_worker(jq, done):
    n = 0
    while True:
        item = jq.get(timeout=30)
        if item is None:
            jq.task_done()
            return n
        with done.get_lock():
            done.value += 1
        n += 1
        jq.task_done()


def test_joinable_join_with_child_workers(mp, new):
    jq = new(mp.JoinableQueue)
    done = FORK.Value("i", 0)
    with ChildSet(mp.Process) as kids:
        workers = [kids.start(_joinable_worker, jq, done) for _ in range(3)]
        for i in range(300):
            jq.put(i)
        for _ in workers:
            jq.put(None)
        assert ThreadTask(jq.join).result(30) is None
        assert done.value == 300, f"join() returned after {done.value} of 300 tasks"
        assert sum(w.result(10) for w in workers) == 300
        for w in workers:
            assert w.join() == 0
    with raises_exact(ValueError, "task_done() called too many times"):
        jq.task_done()


def _joinable_child_puts(jq, n):
    for i in range(n):
        jq.put(("child", i))
    return n


def test_joinable_join_counts_items_put_by_a_child(mp, new):
    jq = new(mp.JoinableQueue)
    with ChildSet(mp.Process) as kids:
        kid = kids.start(_joinable_child_puts, jq, 20)
        got = [jq.get(timeout=10) for _ in range(20)]
        assert got == [("child", i) for i in range(20)]
        assert kid.result() == 20
        assert kid.join() == 0
    joiner = ThreadTask(jq.join)
    for _ in range(19):
        jq.task_done()
    assert not joiner.join(0.3), "join() returned with a task unfinished"
    jq.task_done()
    assert joiner.result(10) is None


# ==========================================================================
# SimpleQueue


def test_simple_queue_round_trip(mp, new):
    sq = new(mp.SimpleQueue)
    assert sq.empty() is True
    sq.put("first")
    assert sq.empty() is False  # SimpleQueue writes in put
    assert sq.get() == "first"
    assert sq.empty() is True
    # one at a time: multiprocessing's put blocks once the pipe buffer is full
    got = []
    for obj in OBJECTS:
        task = ThreadTask(sq.put, obj)
        got.append(get_within(sq))
        task.result(10)
    assert mismatches(got, OBJECTS) == []
    for i in range(500):
        sq.put(i)
    assert [sq.get() for _ in range(500)] == list(range(500))
    assert sq.empty() is True


def test_simple_queue_pickling_error_from_put(mp, new):
    sq = new(mp.SimpleQueue)
    sq.put("a")
    with pytest.raises(TypeError, match="cannot pickle"):
        sq.put(threading.Lock())
    sq.put("b")
    assert sq.get() == "a"
    assert sq.get() == "b"
    assert sq.empty() is True


def test_simple_queue_closed(mp, new):
    sq = new(mp.SimpleQueue)
    sq.put(1)
    assert sq.close() is None
    for call in (lambda: sq.put(2), sq.get, sq.empty):
        with raises_exact(OSError, "handle is closed"):
            call()
    assert sq.close() is None  # twice is fine


def test_simple_queue_blocked_get_wakes(mp, new):
    sq = new(mp.SimpleQueue)
    task = ThreadTask(sq.get)
    assert not task.join(0.3), "get on an empty SimpleQueue did not block"
    sq.put("v")
    assert task.result(10) == "v"


def _simple_child(sq_in, sq_out, n):
    for _ in range(n):
        sq_out.put(("echo", sq_in.get()))
    return "done"


def test_simple_queue_across_processes(mp, new):
    sq_in, sq_out = new(mp.SimpleQueue), new(mp.SimpleQueue)
    with ChildSet(mp.Process) as kids:
        kid = kids.start(_simple_child, sq_in, sq_out, 200)
        for i in range(200):
            sq_in.put(i)
            assert get_within(sq_out) == ("echo", i)
        assert kid.result() == "done"
        assert kid.join() == 0
    assert sq_in.empty() and sq_out.empty()


# ==========================================================================
# across processes (fork children of the implementation)


def _producer(q, objects):
    for obj in objects:
        q.put(obj)
    return len(objects)


def _consumer(q, expected):
    got = [q.get(timeout=30) for _ in expected]
    return mismatches(got, expected)


def test_child_producer(mp, new):
    q = new(mp.Queue)
    with ChildSet(mp.Process) as kids:
        kid = kids.start(_producer, q, OBJECTS)
        got = [q.get(timeout=30) for _ in OBJECTS]
        assert kid.result() == len(OBJECTS)
        assert kid.join() == 0
    assert mismatches(got, OBJECTS) == []
    assert q.qsize() == 0


def test_child_consumer(mp, new):
    q = new(mp.Queue)
    with ChildSet(mp.Process) as kids:
        kid = kids.start(_consumer, q, OBJECTS)
        for obj in OBJECTS:
            q.put(obj)
        assert kid.result(30) == []
        assert kid.join() == 0
    assert q.qsize() == 0


def _fifo_producer(q, pid, n):
    for i in range(n):
        q.put((pid, i))
    return n


def _fifo_consumer(q):
    got = []
    while True:
        item = q.get(timeout=30)
        if item is None:
            return got
        got.append(item)


def check_streams(streams, producers, n):
    """No loss, no duplicate, FIFO per producer within each consumer's stream."""
    for c, stream in enumerate(streams):
        last = {}
        for p, i in stream:
            assert i > last.get(p, -1), f"consumer {c}: ({p}, {i}) after ({p}, {last[p]})"
            last[p] = i
    for p in range(producers):
        seqs = sorted(i for stream in streams for (pp, i) in stream if pp == p)
        assert seqs == list(range(n)), f"producer {p}: lost or duplicated items"


def test_many_producers_and_consumers(mp, new):
    q = new(mp.Queue)
    n, producers, consumers = 1000, 3, 2
    with ChildSet(mp.Process) as kids:
        cons = [kids.start(_fifo_consumer, q) for _ in range(consumers)]
        prods = [kids.start(_fifo_producer, q, p, n) for p in range(producers)]
        for k in prods:
            assert k.result(30) == n
            assert k.join(30) == 0  # multiprocessing: its feeder has written everything
        for _ in cons:
            q.put(None)
        streams = [k.result(30) for k in cons]
        for k in cons:
            assert k.join() == 0
    check_streams(streams, producers, n)
    assert q.qsize() == 0


def _qsize_child(q, put_done, drained, n):
    for i in range(n):
        q.put(i)
    put_done.set()
    if not drained.wait(30):
        raise AssertionError("the parent did not drain the queue")
    return (q.qsize(), q.empty(), q.full())


def test_qsize_full_empty_across_processes(mp, new):
    q = new(mp.Queue, 5)
    put_done, drained = FORK.Event(), FORK.Event()
    with ChildSet(mp.Process) as kids:
        kid = kids.start(_qsize_child, q, put_done, drained, 5)
        assert put_done.wait(30)
        assert q.qsize() == 5
        assert q.full() is True
        with pytest.raises(queue.Full):
            q.put_nowait("no room")
        assert [q.get(timeout=10) for _ in range(5)] == list(range(5))
        assert q.qsize() == 0 and q.full() is False and q.empty() is True
        drained.set()
        assert kid.result() == (0, True, False)
        assert kid.join() == 0


def _blocked_getter(q, ready):
    ready.set()
    t0 = time.monotonic()
    item = q.get(timeout=30)
    return item, time.monotonic() - t0


def test_blocked_get_in_a_child_wakes_when_the_parent_puts(mp, new):
    q = new(mp.Queue)
    ready = FORK.Event()
    with ChildSet(mp.Process) as kids:
        kid = kids.start(_blocked_getter, q, ready)
        assert ready.wait(10)
        assert wait_until(lambda: sleeping(kid.pid), 10), "the child did not go to sleep in get()"
        assert not kid.reported(), "get() returned from an empty queue"
        t_put = time.monotonic()
        q.put(("wake", 1))
        assert kid.reported(5), "the child's get() did not wake within 5s of the put"
        woke_after = time.monotonic() - t_put
        item, _ = kid.result()
        assert item == ("wake", 1)
        assert woke_after < 2.0
        assert kid.join() == 0


def _blocked_putter(q, ready, item):
    ready.set()
    q.put(item, timeout=30)
    return "put"


def test_blocked_put_in_a_child_wakes_when_the_parent_gets(mp, new):
    q = new(mp.Queue, 1)
    q.put("first")
    ready = FORK.Event()
    with ChildSet(mp.Process) as kids:
        kid = kids.start(_blocked_putter, q, ready, "second")
        assert ready.wait(10)
        assert wait_until(lambda: sleeping(kid.pid), 10), "the child did not go to sleep in put()"
        assert not kid.reported(), "put() returned on a full queue"
        assert q.get(timeout=10) == "first"
        assert kid.result(5) == "put"
        assert q.get(timeout=10) == "second"
        assert kid.join() == 0


def _both_sides(q, tag, n):
    for i in range(n):
        q.put((tag, i))
    q.put(None)
    return _fifo_consumer(q)


def test_queue_created_before_fork_used_by_both_sides(mp, new):
    q = new(mp.Queue)
    n = 1000
    with ChildSet(mp.Process) as kids:
        kid = kids.start(_both_sides, q, 1, n)
        mine = _both_sides(q, 0, n)
        theirs = kid.result(30)
        assert kid.join() == 0
    check_streams([mine, theirs], 2, n)
    assert q.qsize() == 0 and q.empty() is True


# ==========================================================================
# blocking calls in fresh subprocesses: the GIL is released, Ctrl+C interrupts


# name: (setup, call blocked in a thread, what the main thread then does, repr of the call's result)
GIL_CASES = {
    "Queue.get": ("q = m.Queue()", "q.get()", "q.put('v')", "'v'"),
    "Queue.get(timeout)": ("q = m.Queue()", "q.get(timeout=30)", "q.put('v')", "'v'"),
    "Queue.put(full)": ("q = m.Queue(1); q.put(0)", "q.put(1) or 'put'", "q.get()", "'put'"),
    "Queue.put(full, timeout)": ("q = m.Queue(1); q.put(0)", "q.put(1, timeout=30) or 'put'", "q.get()", "'put'"),
    "SimpleQueue.get": ("q = m.SimpleQueue()", "q.get()", "q.put('v')", "'v'"),
    "JoinableQueue.join": ("q = m.JoinableQueue(); q.put(1); q.get()", "q.join() or 'joined'", "q.task_done()",
                           "'joined'"),
}
GIL_CASES_CPROC = {
    "Queue.get_many": ("q = m.Queue()", "q.get_many(5)", "q.put('v')", "['v']"),
    "Queue.get_many(timeout)": ("q = m.Queue()", "q.get_many(5, timeout=30)", "q.put('v')", "['v']"),
    "Queue.put_many(full)": ("q = m.Queue(2); q.put(0); q.put(1)", "q.put_many([2, 3]) or 'put'",
                             "q.get_many(2)", "'put'"),
}


def _gil_check(tmp_path, impl, case, setup, call, finish, expected):
    body = GIL_SCRIPT.format(setup=setup, call=call, finish=finish)
    check_gil_script(popen_impl_script(tmp_path, "gil", body, impl, "fork"), expected)


@pytest.mark.parametrize("case", list(GIL_CASES))
def test_blocked_call_lets_other_threads_run(mp, tmp_path, case):
    _gil_check(tmp_path, mp.name, case, *GIL_CASES[case])


@pytest.mark.parametrize("case", list(GIL_CASES_CPROC))
def test_blocked_batch_call_lets_other_threads_run(cproc, tmp_path, case):
    _gil_check(tmp_path, "cproc", case, *GIL_CASES_CPROC[case])


AFTER_GET = "(q.put(7), q.get(timeout=5))[1]"
AFTER_PUT = "(q.qsize(), q.get(timeout=5), q.qsize())"

# name: (setup, blocking call, expression printed after the interrupt, its expected repr)
CTRL_C_CASES = {
    "Queue.get": ("q = m.Queue()", "q.get()", AFTER_GET, "7"),
    "Queue.get(timeout=60)": ("q = m.Queue()", "q.get(timeout=60)", AFTER_GET, "7"),
    "Queue.put(full)": ("q = m.Queue(1); q.put('first')", "q.put('second')", AFTER_PUT, "(1, 'first', 0)"),
    "Queue.put(full, timeout=60)": ("q = m.Queue(1); q.put('first')", "q.put('second', timeout=60)", AFTER_PUT,
                                    "(1, 'first', 0)"),
    "JoinableQueue.get": ("q = m.JoinableQueue()", "q.get()", AFTER_GET, "7"),
    "JoinableQueue.join": ("q = m.JoinableQueue(); q.put(1)", "q.join()",
                           "(q.get(timeout=5), q.task_done(), q.join())", "(1, None, None)"),
    "SimpleQueue.get": ("q = m.SimpleQueue()", "q.get()", "(q.put(7), q.get())[1]", "7"),
}
CTRL_C_CASES_CPROC = {
    "Queue.get_many": ("q = m.Queue()", "q.get_many(5)", "(q.put(7), q.get_many(5, timeout=5))[1]", "[7]"),
    "Queue.get_many(timeout=60)": ("q = m.Queue()", "q.get_many(5, timeout=60)",
                                   "(q.put(7), q.get_many(5, timeout=5))[1]", "[7]"),
    "Queue.put_many(full)": ("q = m.Queue(1); q.put('first')", "q.put_many(['a'])", AFTER_PUT, "(1, 'first', 0)"),
}


def _ctrl_c_check(tmp_path, impl, setup, call, post, expected_post):
    body = setup + "\n" + CTRL_C_SCRIPT.format(call=call, post=post)
    check_ctrl_c_script(popen_impl_script(tmp_path, "ctrl_c", body, impl, "fork"), expected_post)


@pytest.mark.parametrize("case", list(CTRL_C_CASES))
def test_ctrl_c_interrupts_blocked_call(mp, tmp_path, case):
    _ctrl_c_check(tmp_path, mp.name, *CTRL_C_CASES[case])


@pytest.mark.parametrize("case", list(CTRL_C_CASES_CPROC))
def test_ctrl_c_interrupts_blocked_batch_call(cproc, tmp_path, case):
    _ctrl_c_check(tmp_path, "cproc", *CTRL_C_CASES_CPROC[case])


# ==========================================================================
# B. cproc's own promises
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
    elapsed = _timed_raise(queue.Empty, q.get_many, 5, block=False)
    assert elapsed < 1.0
    _assert_waited(_timed_raise(queue.Empty, q.get_many, 5, timeout=0.2), 0.2)
    _assert_waited(_timed_raise(queue.Empty, q.get_many, 5, True, 0.3), 0.3)


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
    assert not task.join(0.3), "get_many on an empty queue did not block"
    q.put_many(["a", "b", "c"])
    got = task.result(10)
    assert 1 <= len(got) <= 3 and got == ["a", "b", "c"][:len(got)]
    rest = q.get_many(10, block=False) if len(got) < 3 else []
    assert got + rest == ["a", "b", "c"]
    task = ThreadTask(q.get_many, 10, True, 30)
    assert not task.join(0.3)
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
    elapsed = _timed_raise(queue.Full, q.put_many, ["a", "b", "c"], block=False)
    assert elapsed < 1.0
    assert q.qsize() == 3  # nothing of the refused batch was put
    _assert_waited(_timed_raise(queue.Full, q.put_many, ["a", "b", "c"], timeout=0.2), 0.2)
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
    assert not task.join(0.3), "put_many did not wait for room"
    assert q.get_nowait() == "a"  # room for 2 of the 3
    assert not task.join(0.3), "put_many put a batch that did not fit"
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
    assert not joiner.join(0.3), "join() returned with a task of the batch unfinished"
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
        assert wait_until(lambda: sleeping(victim.pid), 10), f"the child did not go to sleep in {call}"
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
        assert wait_until(lambda: sleeping(other.pid), 10)
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
