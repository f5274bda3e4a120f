"""Queue, SimpleQueue, JoinableQueue: differential tests against multiprocessing
(Python 3.11); cproc's own promises are in test_queue_cproc.py, the helpers
both share in helpers/queues.py.

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

Blocking behaviour (the GIL released while blocked, Ctrl+C) is tested in fresh
subprocesses, so that a call stuck with the GIL held cannot hang the run.
Children are ``mp.Process`` (multiprocessing's fork context, or cproc's
Process); they report through a multiprocessing (stdlib) pipe, so that a bug
in cproc cannot hide in the report.
"""

import queue
import re
import sys
import threading
import time
import types

import multiprocessing
import pytest

from helpers.blocking import wait_blocked, wait_until
from helpers.children import FORK, ChildSet, ThreadTask
from helpers.queues import _warm_up_queues, new  # noqa: F401,F811 - fixtures
from helpers.queues import (OBJECTS, assert_waited, get_within, mismatches, queues_module, raises_exact,
    timed_raise)
from helpers.scripts import (CTRL_C_SCRIPT, GIL_SCRIPT, check_ctrl_c_script, check_gil_script,
    popen_impl_script)

pytestmark = pytest.mark.timeout(60)

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is a test dependency
    numpy = None

needs_numpy = pytest.mark.skipif(numpy is None, reason="numpy is not installed")


# ==========================================================================
# construction, types, repr


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
        elapsed = timed_raise(queue.Empty, call)
        assert elapsed < 1.0, f"non-blocking get took {elapsed:.2f}s"


def test_get_timeout(mp, new):
    q = new(mp.Queue)
    assert_waited(timed_raise(queue.Empty, q.get, timeout=0.2), 0.2)
    assert_waited(timed_raise(queue.Empty, q.get, True, 0.3), 0.3)


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
            assert_waited(timed_raise(queue.Empty, q.get, bad, 0.2), 0.2)
        else:
            assert timed_raise(queue.Empty, q.get, bad, 10) < 1.0
            assert timed_raise(queue.Empty, q.get, bad) < 1.0
    for bad in BAD_BLOCKS:
        q.put(bad, bad)                    # unbounded: never waits
    assert [q.get(2.5, 10) for _ in BAD_BLOCKS] == list(BAD_BLOCKS)
    full = new(mp.Queue, 1)
    full.put("kept", [])
    assert timed_raise(queue.Full, full.put, "extra", None, 10) < 1.0
    assert_waited(timed_raise(queue.Full, full.put, "extra", "x", 0.2), 0.2)
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
            assert_waited(_timed(lambda: lock.acquire("x", 0.2) is False), 0.2)
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
        elapsed = timed_raise(queue.Full, call)
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
    assert_waited(timed_raise(queue.Full, q.put, 2, timeout=0.2), 0.2)
    assert_waited(timed_raise(queue.Full, q.put, 2, True, 0.3), 0.3)
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
    wait_blocked(task)
    assert task.is_alive(), "put on a full queue did not block"
    assert q.get(timeout=10) == "a"
    task.result(10)
    assert q.qsize() == 2 and q.full() is True
    assert [q.get(timeout=10) for _ in range(2)] == ["b", "c"]


def test_blocked_get_wakes_when_another_thread_puts(mp, new):
    q = new(mp.Queue)
    task = ThreadTask(q.get)
    wait_blocked(task)
    assert task.is_alive(), "get on an empty queue did not block"
    q.put("v")
    assert task.result(10) == "v"
    task = ThreadTask(q.get, True, 30)
    wait_blocked(task)
    assert task.is_alive()
    q.put("w")
    assert task.result(10) == "w"


def test_several_blocked_getters_each_get_one(mp, new):
    q = new(mp.Queue)
    tasks = [ThreadTask(q.get, True, 30) for _ in range(4)]
    wait_blocked(*tasks)
    assert all(t.is_alive() for t in tasks)
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
    wait_blocked(joiner)
    assert joiner.is_alive(), "join() returned with a task unfinished"
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
    wait_blocked(joiner)
    assert joiner.is_alive(), "join() returned with a task unfinished"
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
    wait_blocked(task)
    assert task.is_alive(), "get on an empty SimpleQueue did not block"
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
        wait_blocked(kid)
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
        wait_blocked(kid)
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
