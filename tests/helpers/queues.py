"""What the queue tests share (test_queue.py, test_queue_cproc.py): objects
that travel, exact comparisons, timing checks, the `new` fixture that empties
and closes every queue a test made, and a module fixture that warms the queues
up before the leak baseline.  A test module imports the fixtures by name."""

import importlib
import pickle
import queue
import random
import time

import multiprocessing
import pytest

from helpers.blocking import wait_until
from helpers.children import Payload, ThreadTask

MiB = 1 << 20


# --------------------------------------------------------------------------
# objects that travel (module level: pickled by reference to this module)


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


def timed_raise(exc_type, fn, *args, **kwargs):
    """fn(...) must raise exactly exc_type; the seconds it took."""
    t0 = time.monotonic()
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    elapsed = time.monotonic() - t0
    assert type(info.value) is exc_type, f"raised {type(info.value).__name__}: {info.value}"
    return elapsed


def assert_waited(elapsed, timeout):
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
