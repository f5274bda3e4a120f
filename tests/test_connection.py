"""Pipe and Connection: differential tests, cproc against multiprocessing (Python 3.11).

Every test runs once per implementation (fixture ``mp``: multiprocessing's
fork context, or cproc; select a side with ``-k multiprocessing`` or
``-k cproc``).  ``Pipe`` comes from ``mp``, ``Connection`` and ``wait`` from
``<impl>.connection``.  The expectations are what multiprocessing 3.11 shows
the user: return values, exception types and messages, the bytes on the wire.

Notes on multiprocessing 3.11 that the expectations encode:

* Framing: a 4-byte big-endian signed length then the payload; a length of -1
  announces an 8-byte unsigned length (used above 2 GiB, but the reader
  accepts it for any size).  ``send`` pickles with ForkingPickler first, so an
  unpicklable object raises before anything is written.
* ``recv_bytes(maxlength)`` with a longer message raises
  ``OSError('bad message length')`` and leaves the body unread: a duplex
  connection becomes write-only (``readable`` is False), a read-only one is
  closed.
* ``recv_bytes_into`` checks the offset (in bytes) before reading; a message
  that does not fit is consumed and raised as ``BufferTooShort(message)``,
  the buffer left untouched.
* EOF before a message: ``EOFError``; EOF inside a message:
  ``OSError('got end of file during message')``.
* Handles are non-inheritable (socketpair / os.pipe with O_CLOEXEC).

Blocking behaviour (GIL released while blocked, Ctrl+C) is tested in fresh
``python -c`` subprocesses, so that a call stuck with the GIL held cannot hang
the test run; cross-process tests use fork children
(``mp.get_context('fork').Process``).
"""

import array
import contextlib
import fcntl
import gc
import hashlib
import importlib
import os
import pickle
import socket
import stat
import struct
import threading
import time

import multiprocessing
import multiprocessing.connection
import pytest

from helpers.children import FORK, Payload, ThreadTask
from helpers.scripts import (CTRL_C_SCRIPT, GIL_SCRIPT, check_ctrl_c_script, check_gil_script,
    popen_impl_script)

pytestmark = pytest.mark.timeout(30)

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is a test dependency
    numpy = None


def conn_module(mp):
    """multiprocessing.connection or cproc.connection."""
    return importlib.import_module(mp.name + ".connection")


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("refuses to be pickled")


# --------------------------------------------------------------------------
# fixtures: everything a test opens is closed at teardown (the leak check
# runs after)


@pytest.fixture
def raw_peer(mp, closing):
    """raw_peer() -> (impl Connection, plain socket) on the two ends of a socketpair."""

    def make():
        s1, s2 = socket.socketpair()
        closing.extend((s1, s2))
        conn = connection_on(conn_module(mp).Connection, s1)
        closing.append(conn)
        s2.settimeout(10)
        return conn, s2

    return make


def connection_on(Connection, sock, **kwargs):
    """Connection(sock.detach(), ...); the fd is closed if the constructor fails."""
    fd = sock.detach()
    try:
        return Connection(fd, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def recv_exact(sock, n):
    """n bytes from a socket (with its timeout), or fewer at EOF."""
    chunks = []
    while n > 0:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock):
    """One multiprocessing frame read raw from a socket: the payload."""
    (n,) = struct.unpack("!i", recv_exact(sock, 4))
    if n == -1:
        (n,) = struct.unpack("!Q", recv_exact(sock, 8))
    payload = recv_exact(sock, n)
    assert len(payload) == n, f"frame announced {n} bytes, got {len(payload)}"
    return payload


def frame(payload):
    return struct.pack("!i", len(payload)) + payload


@contextlib.contextmanager
def raises_exact(exc_type, message=None):
    """pytest.raises, but the type must be exactly exc_type (not a subclass)
    and, if given, str(exc) must equal message."""
    with pytest.raises(exc_type) as info:
        yield info
    assert type(info.value) is exc_type, f"raised {type(info.value).__name__}: {info.value}"
    if message is not None:
        assert str(info.value) == message


def _timed(fn, *args, **kwargs):
    t0 = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - t0


class _Later:
    """Calls fn(*args) from a timer thread after delay; .at is when it was called.

    A blocking call that returns at or after .at waited for the event,
    however late the scheduler ran either thread."""

    def __init__(self, delay, fn, *args):
        self.at = None

        def fire():
            self.at = time.monotonic()
            fn(*args)

        self._timer = threading.Timer(delay, fire)

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.join(10)


def _returned_after(later, fn, *args):
    """Runs fn(*args); asserts it returned after later fired and within 5 s."""
    t0 = time.monotonic()
    result = fn(*args)
    done = time.monotonic()
    assert later.at is not None and done >= later.at, "returned before the event it waits for"
    assert done - t0 < 5, f"returned after {done - t0:.3f}s"
    return result


def _assert_waited(elapsed, timeout):
    assert elapsed >= timeout - 0.01, f"returned after {elapsed:.3f}s, before the {timeout}s timeout"
    assert elapsed < timeout + 2.0, f"returned after {elapsed:.3f}s for a {timeout}s timeout"


def _finish(p, timeout=10):
    """Join a process (kill it if it does not end); return its exitcode."""
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join(5)
        code = None
    else:
        code = p.exitcode
    if p.exitcode is not None:
        p.close()
    return code


def recv_within(conn, timeout=10):
    """conn.recv(), but fail instead of blocking when nothing comes."""
    assert conn.poll(timeout), f"nothing arrived within {timeout}s"
    return conn.recv()


def recv_bytes_within(conn, timeout=10):
    assert conn.poll(timeout), f"nothing arrived within {timeout}s"
    return conn.recv_bytes()


# ==========================================================================
# Pipe: kinds of ends


def _access_mode(fd):
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


def test_pipe_duplex_is_a_socketpair(mp, pipe):
    a, b = pipe()
    Connection = conn_module(mp).Connection
    assert isinstance(a, Connection) and isinstance(b, Connection)
    assert (a.readable, a.writable, a.closed) == (True, True, False)
    assert (b.readable, b.writable, b.closed) == (True, True, False)
    fa, fb = a.fileno(), b.fileno()
    assert isinstance(fa, int) and isinstance(fb, int) and fa != fb
    for fd in (fa, fb):
        assert stat.S_ISSOCK(os.fstat(fd).st_mode)
        with socket.socket(fileno=os.dup(fd)) as s:
            assert (s.family, s.type) == (socket.AF_UNIX, socket.SOCK_STREAM)
        assert os.get_inheritable(fd) is False
    a.send("to b")
    b.send("to a")
    assert recv_within(b) == "to b"
    assert recv_within(a) == "to a"


def test_pipe_simplex_is_an_os_pipe_reader_first(mp, pipe):
    r, w = pipe(duplex=False)
    assert (r.readable, r.writable) == (True, False)
    assert (w.readable, w.writable) == (False, True)
    for fd in (r.fileno(), w.fileno()):
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
        assert os.get_inheritable(fd) is False
    assert _access_mode(r.fileno()) == os.O_RDONLY
    assert _access_mode(w.fileno()) == os.O_WRONLY
    w.send({"x": 1})
    w.send_bytes(b"raw")
    assert recv_within(r) == {"x": 1}
    assert r.recv_bytes() == b"raw"


def test_pipe_entry_points(mp, closing):
    cm = conn_module(mp)
    for make in (lambda: mp.Pipe(), lambda: mp.Pipe(duplex=True), lambda: cm.Pipe(),
                 lambda: mp.Pipe(duplex=False), lambda: cm.Pipe(False)):
        a, b = make()
        closing.extend((a, b))
        assert isinstance(a, cm.Connection) and isinstance(b, cm.Connection)
        writer, reader = (b, a) if not a.writable else (a, b)
        writer.send(5)
        assert recv_within(reader) == 5
    assert callable(cm.wait)
    assert mp.BufferTooShort is multiprocessing.BufferTooShort


def test_connection_from_a_handle(mp, closing):
    Connection = conn_module(mp).Connection
    s1, s2 = socket.socketpair()
    closing.extend((s1, s2))
    a = Connection(os.dup(s1.fileno()))
    b = Connection(os.dup(s2.fileno()), readable=True, writable=True)
    closing.extend((a, b))
    a.send([1, 2])
    assert recv_within(b) == [1, 2]
    ro = Connection(os.dup(s1.fileno()), writable=False)
    wo = Connection(os.dup(s2.fileno()), readable=False)
    closing.extend((ro, wo))
    assert (ro.readable, ro.writable, wo.readable, wo.writable) == (True, False, False, True)
    wo.send_bytes(b"via write-only")
    assert ro.recv_bytes() == b"via write-only"


def test_connection_constructor_errors(mp, closing):
    Connection = conn_module(mp).Connection
    with raises_exact(ValueError, "invalid handle"):
        Connection(-1)
    s = socket.socket()
    closing.append(s)
    fd = s.fileno()
    with raises_exact(ValueError, "at least one of `readable` and `writable` must be True"):
        Connection(fd, readable=False, writable=False)
    os.fstat(fd)  # a refused handle is not closed


def test_private_handle_attribute(mp, closing):
    """_handle, which CPython's own tests use: the fd, None once closed;
    set to None, the Connection forgets its fd without closing it."""
    Connection = conn_module(mp).Connection
    s = socket.socket()
    closing.append(s)
    fd = os.dup(s.fileno())
    c = Connection(fd)
    assert c._handle == fd
    c._handle = None
    assert c.closed
    with raises_exact(OSError, "handle is closed"):
        c.fileno()
    del c
    os.fstat(fd)      # still open: forgotten, not closed
    c = Connection(fd)
    c.close()
    assert c._handle is None
    with pytest.raises(OSError):
        os.fstat(fd)


def test_close_closes_the_handle(mp):
    Connection = conn_module(mp).Connection
    s1, s2 = socket.socketpair()
    try:
        c = connection_on(Connection, s1)
        fd = c.fileno()
        c.close()
        assert c.closed is True
        with pytest.raises(OSError):
            os.fstat(fd)
        c.close()  # twice is fine
        # the peer sees the close
        s2.settimeout(10)
        assert s2.recv(1) == b""
    finally:
        s2.close()


def test_dropping_a_connection_closes_its_handle(mp):
    Connection = conn_module(mp).Connection
    s1, s2 = socket.socketpair()
    try:
        c = connection_on(Connection, s1)
        fd = c.fileno()
        del c
        gc.collect()
        s2.settimeout(10)
        assert s2.recv(1) == b"", "the handle of a dropped Connection is still open"
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        s2.close()


def test_context_manager(mp, pipe):
    a, b = pipe()
    with a as entered:
        assert entered is a
        a.send(1)
    assert a.closed is True
    assert recv_within(b) == 1
    with pytest.raises(EOFError):
        b.recv()
    c, d = pipe()
    with pytest.raises(ZeroDivisionError):
        with c:
            1 / 0
    assert c.closed is True


# ==========================================================================
# misuse: closed connection, wrong end of a simplex pipe


CLOSED_CALLS = {
    "send": lambda c: c.send(1),
    "recv": lambda c: c.recv(),
    "send_bytes": lambda c: c.send_bytes(b"x"),
    "recv_bytes": lambda c: c.recv_bytes(),
    "recv_bytes_into": lambda c: c.recv_bytes_into(bytearray(8)),
    "poll": lambda c: c.poll(),
    "poll(1)": lambda c: c.poll(1),
    "fileno": lambda c: c.fileno(),
}


def test_closed_connection_raises(mp, pipe):
    a, b = pipe()
    a.close()
    assert a.closed is True
    assert (a.readable, a.writable) == (True, True)  # as multiprocessing: unchanged
    for name, call in CLOSED_CALLS.items():
        with raises_exact(OSError, "handle is closed"):
            call(a)
    a.close()
    r, w = pipe(duplex=False)
    w.close()
    # closed is checked before the direction
    with raises_exact(OSError, "handle is closed"):
        w.recv()
    with raises_exact(OSError, "handle is closed"):
        w.fileno()


def test_wrong_end_of_a_simplex_pipe(mp, pipe):
    r, w = pipe(duplex=False)
    for call in (lambda: r.send(1), lambda: r.send_bytes(b"x"), lambda: r.send_bytes(b"x", 0, 1)):
        with raises_exact(OSError, "connection is read-only"):
            call()
    for call in (w.recv, w.recv_bytes, lambda: w.recv_bytes_into(bytearray(4)), w.poll, lambda: w.poll(0.5)):
        with raises_exact(OSError, "connection is write-only"):
            call()
    # nothing was sent, both ends still work
    w.send("ok")
    assert recv_within(r) == "ok"
    assert r.poll() is False


# ==========================================================================
# objects


OBJECTS = [
    None, True, False, 0, -1, 2**100, -(2**70), 1.5, -0.0, 3 + 4j,
    "", "héllo ☃ \U0001f600", "x" * 10000,
    b"", b"\x00\xff" * 50, bytearray(b"abc"),
    [], [1, [2, [3]]], (), (1, "a", None), {"k": [1, 2], 3: {"nested": ()}},
    {1, 2, 3}, frozenset({"a"}), range(3, 30, 3),
    Payload(7, ["a", b"b"]),
]


def test_send_recv_objects(mp, pipe):
    a, b = pipe()
    for obj in OBJECTS:
        a.send(obj)
    for obj in OBJECTS:
        got = recv_within(b)
        assert type(got) is type(obj)
        assert got == obj
    exc = ValueError("boom", 3)
    b.send(exc)
    got = recv_within(a)
    assert type(got) is ValueError and got.args == ("boom", 3)
    assert a.poll() is False and b.poll() is False


def test_many_messages_in_order(mp, pipe):
    a, b = pipe()
    got = []
    # in batches: a socket buffer holds only a few hundred small messages
    for start in range(0, 2000, 50):
        for i in range(start, start + 50):
            a.send(("m", i))
        assert b.poll(5) is True
        got.extend(b.recv() for _ in range(50))
    assert got == [("m", i) for i in range(2000)]
    assert b.poll() is False


def test_simplex_objects_and_bytes_interleaved(mp, pipe):
    r, w = pipe(duplex=False)
    w.send([1])
    w.send_bytes(b"two")
    w.send(3)
    assert recv_within(r) == [1]
    assert r.recv_bytes() == b"two"
    assert r.recv() == 3


def test_unpicklable_object_raises_and_sends_nothing(mp, pipe):
    a, b = pipe()
    with pytest.raises(TypeError, match="cannot pickle"):
        a.send(threading.Lock())
    assert b.poll() is False
    with raises_exact(RuntimeError, "refuses to be pickled"):
        a.send(["fine", Unpicklable()])
    assert b.poll() is False
    try:
        multiprocessing.reduction.ForkingPickler.dumps(lambda: 0)
    except Exception as exc:  # noqa: BLE001
        expected = type(exc)
    with pytest.raises(Exception) as info:
        a.send(lambda: 0)
    assert type(info.value) is expected
    assert b.poll() is False
    a.send("next")
    assert recv_within(b) == "next"
    assert b.poll() is False


def test_recv_of_a_payload_that_is_not_a_pickle(mp, pipe):
    a, b = pipe()
    try:
        pickle.loads(b"not a pickle")
    except Exception as exc:  # noqa: BLE001
        expected = (type(exc), str(exc))
    a.send_bytes(b"not a pickle")
    with pytest.raises(Exception) as info:
        recv_within(b)
    assert (type(info.value), str(info.value)) == expected
    a.send("still usable")
    assert recv_within(b) == "still usable"


# ==========================================================================
# send_bytes / recv_bytes


def test_send_bytes_buffers_offsets_and_sizes(mp, pipe):
    a, b = pipe()
    data = b"0123456789"
    cases = [
        ((data,), data),
        ((bytearray(data),), data),
        ((memoryview(data),), data),
        ((memoryview(data)[2:5],), b"234"),
        ((data, 3), b"3456789"),
        ((data, 3, 4), b"3456"),
        ((data, 0, 0), b""),
        ((data, 10), b""),
        ((data, 10, 0), b""),
        ((data, 0, 10), data),
        ((data, 2, None), b"23456789"),
        ((b"",), b""),
        ((array.array("i", [1, 2, 3]),), array.array("i", [1, 2, 3]).tobytes()),
        ((array.array("i", [1, 2, 3]), 4), array.array("i", [2, 3]).tobytes()),  # offset in bytes
        ((array.array("i", [1, 2, 3]), 4, 4), array.array("i", [2]).tobytes()),
        ((array.array("d", [0.5, 1.5]), 1, 6), array.array("d", [0.5, 1.5]).tobytes()[1:7]),
    ]
    for args, _ in cases:
        a.send_bytes(*args)
    for args, expected in cases:
        got = recv_bytes_within(b)
        assert type(got) is bytes
        assert got == expected, f"send_bytes{args!r}"
    a.send_bytes(data, offset=1, size=2)
    assert b.recv_bytes() == b"12"
    assert b.poll() is False


def test_send_bytes_argument_errors(mp, pipe):
    a, b = pipe()
    data = b"0123456789"
    ints = array.array("i", [1, 2, 3])  # 12 bytes
    cases = [
        ((data, -1), "offset is negative"),
        ((data, 11), "buffer length < offset"),
        ((data, 0, -1), "size is negative"),
        ((data, 5, 6), "buffer length < offset + size"),
        ((data, 0, 11), "buffer length < offset + size"),
        ((ints, 13), "buffer length < offset"),
        ((ints, 4, 9), "buffer length < offset + size"),
        # offsets and sizes beyond any C integer are compared all the same
        ((data, 2**70), "buffer length < offset"),
        ((data, -2**70), "offset is negative"),
        ((data, 0, 2**70), "buffer length < offset + size"),
        ((data, 0, -2**70), "size is negative"),
        ((data, 1, 2**63 - 1), "buffer length < offset + size"),
        ((data, 2**62, 2**62), "buffer length < offset"),
        ((data, 9, 2**63 - 1), "buffer length < offset + size"),
    ]
    for args, message in cases:
        with raises_exact(ValueError, message):
            a.send_bytes(*args)
    for bad in ("text", 5, None, [1, 2]):
        with pytest.raises(TypeError):
            a.send_bytes(bad)
    for bad_args in ((data, 1.0), (data, 0, 1.0), (data, "1")):   # slice indices must be integers
        with pytest.raises(TypeError):
            a.send_bytes(*bad_args)
    assert b.poll() is False  # nothing was sent
    a.send_bytes(data, 5, 5)
    assert recv_bytes_within(b) == b"56789"


def test_send_bytes_refuses_a_buffer_that_is_not_contiguous(mp, pipe):
    """multiprocessing fails on one too (TypeError, or BufferError after
    sending the header of a large one); cproc: TypeError, nothing sent."""
    a, b = pipe()
    data = b"0123456789"
    for strided in (memoryview(data)[::2], memoryview(array.array("i", [1, 2, 3]))[::2],
                    memoryview(data * 10000)[::3]):
        with pytest.raises(TypeError if mp.name == "cproc" else (TypeError, BufferError)):
            a.send_bytes(strided)
    if mp.name == "cproc":
        assert b.poll() is False


def test_empty_message(mp, pipe):
    a, b = pipe()
    a.send_bytes(b"")
    assert b.poll(5) is True
    assert b.recv_bytes() == b""
    a.send_bytes(b"")
    buf = bytearray(b"untouched")
    assert b.recv_bytes_into(buf, len(buf)) == 0
    assert buf == b"untouched"
    assert b.poll() is False


def test_recv_bytes_maxlength(mp, pipe):
    a, b = pipe()
    a.send_bytes(b"x" * 100)
    assert recv_bytes_within(b) == b"x" * 100
    a.send_bytes(b"y" * 100)
    assert b.recv_bytes(100) == b"y" * 100
    a.send_bytes(b"z" * 100)
    assert b.recv_bytes(maxlength=1000) == b"z" * 100
    a.send_bytes(b"")
    assert b.recv_bytes(0) == b""
    a.send_bytes(b"w" * 100)
    with raises_exact(ValueError, "negative maxlength"):
        b.recv_bytes(-1)
    assert b.recv_bytes() == b"w" * 100  # the refused call read nothing
    a.send_bytes(b"v" * 100)
    with raises_exact(OSError, "bad message length"):
        b.recv_bytes(99)


def test_bad_message_length_leaves_duplex_write_only(mp, pipe):
    a, b = pipe()
    a.send_bytes(b"v" * 100)
    with raises_exact(OSError, "bad message length"):
        b.recv_bytes(10)
    assert (b.closed, b.readable, b.writable) == (False, False, True)
    with raises_exact(OSError, "connection is write-only"):
        b.recv_bytes()
    b.send("still writable")
    assert recv_within(a) == "still writable"


def test_bad_message_length_closes_a_read_only_end(mp, pipe):
    r, w = pipe(duplex=False)
    w.send_bytes(b"v" * 100)
    with raises_exact(OSError, "bad message length"):
        r.recv_bytes(10)
    assert r.closed is True


# --------------------------------------------------------------------------
# recv_bytes_into


def test_recv_bytes_into_bytearray(mp, pipe):
    a, b = pipe()
    a.send_bytes(b"hello")
    buf = bytearray(b"." * 12)
    assert b.poll(5)
    assert b.recv_bytes_into(buf) == 5
    assert buf == b"hello......."
    a.send_bytes(b"world")
    assert b.recv_bytes_into(buf, 7) == 5  # exactly fits
    assert buf == b"hello..world"
    a.send_bytes(b"XY")
    assert b.recv_bytes_into(buf, offset=3) == 2
    assert buf == b"helXY..world"
    a.send_bytes(b"mv")
    mv = memoryview(buf)
    assert b.recv_bytes_into(mv[4:], 1) == 2
    assert buf == b"helXYmvworld"


def test_recv_bytes_into_array_at_offset(mp, pipe):
    a, b = pipe()
    a.send_bytes(array.array("i", [7, 8, 9]))
    arr = array.array("i", [0] * 8)
    assert b.poll(5)
    assert b.recv_bytes_into(arr, 8) == 12  # offset and result in bytes
    assert arr.tolist() == [0, 0, 7, 8, 9, 0, 0, 0]
    a.send_bytes(array.array("i", [1, 2, 3]))
    assert b.recv_bytes_into(arr, 20) == 12  # the last three items
    assert arr.tolist() == [0, 0, 7, 8, 9, 1, 2, 3]
    d = array.array("d", [0.0] * 4)
    a.send_bytes(array.array("d", [2.5, -1.0]))
    assert b.recv_bytes_into(d, 16) == 16
    assert d.tolist() == [0.0, 0.0, 2.5, -1.0]


def test_recv_bytes_into_too_short(mp, pipe):
    a, b = pipe()
    message = bytes(range(50))
    a.send_bytes(message)
    a.send_bytes(b"next")
    assert b.poll(5)
    with pytest.raises(multiprocessing.BufferTooShort) as info:
        b.recv_bytes_into(bytearray(49))
    assert type(info.value) is multiprocessing.BufferTooShort
    assert info.value.args[0] == message  # the whole message, consumed
    assert b.recv_bytes() == b"next"
    # at an offset: 10 - 5 < 6
    a.send_bytes(b"sixsix")
    with pytest.raises(multiprocessing.BufferTooShort) as info:
        b.recv_bytes_into(bytearray(10), 5)
    assert info.value.args[0] == b"sixsix"
    # an array: 8 bytes < 12
    a.send_bytes(array.array("i", [1, 2, 3]))
    with pytest.raises(multiprocessing.BufferTooShort) as info:
        b.recv_bytes_into(array.array("i", [0, 0]))
    assert info.value.args[0] == array.array("i", [1, 2, 3]).tobytes()
    assert b.poll() is False


def test_recv_bytes_into_too_short_leaves_buffer_untouched(mp, pipe):
    a, b = pipe()
    a.send_bytes(b"A" * 20)
    buf = bytearray(b"." * 16)
    assert b.poll(5)
    with pytest.raises(multiprocessing.BufferTooShort):
        b.recv_bytes_into(buf, 2)
    assert buf == b"." * 16


def test_recv_bytes_into_offset_errors(mp, pipe):
    a, b = pipe()
    a.send_bytes(b"kept")
    assert b.poll(5)
    with raises_exact(ValueError, "negative offset"):
        b.recv_bytes_into(bytearray(8), -1)
    with raises_exact(ValueError, "offset too large"):
        b.recv_bytes_into(bytearray(8), 9)
    with raises_exact(ValueError, "offset too large"):
        b.recv_bytes_into(array.array("i", [0, 0, 0]), 13)  # in bytes
    assert b.poll() is True  # the refused calls read nothing
    buf = bytearray(8)
    assert b.recv_bytes_into(buf, 4) == 4
    assert buf == b"\0\0\0\0kept"


def test_recv_bytes_into_read_only_buffer(mp, pipe):
    a, b = pipe()
    a.send_bytes(b"data")
    assert b.poll(5)
    with pytest.raises(TypeError):
        b.recv_bytes_into(b"\0" * 16)
    with pytest.raises(TypeError):
        b.recv_bytes_into("not a buffer")


# ==========================================================================
# EOF, broken pipe, poll


def test_eof_after_the_peer_closed(mp, pipe):
    a, b = pipe()
    a.send("last")
    a.send_bytes(b"raw last")
    a.close()
    assert b.poll() is True
    assert b.recv() == "last"
    assert b.recv_bytes() == b"raw last"
    for _ in range(2):
        assert b.poll() is True  # EOF counts as readable
        assert b.poll(1) is True
        with pytest.raises(EOFError):
            b.recv()
        with pytest.raises(EOFError):
            b.recv_bytes()
        with pytest.raises(EOFError):
            b.recv_bytes_into(bytearray(8))
    assert b.closed is False


def test_eof_on_a_simplex_pipe(mp, pipe):
    r, w = pipe(duplex=False)
    w.send(1)
    w.close()
    assert recv_within(r) == 1
    assert r.poll(5) is True
    with pytest.raises(EOFError):
        r.recv()


def test_send_after_the_peer_closed(mp, pipe):
    a, b = pipe()
    b.close()
    with pytest.raises(BrokenPipeError):
        a.send("nobody listens")
    with pytest.raises(BrokenPipeError):
        a.send_bytes(b"x" * 100000)
    r, w = pipe(duplex=False)
    r.close()
    with pytest.raises(BrokenPipeError):
        w.send_bytes(b"nobody")


def test_poll_does_not_consume(mp, pipe):
    a, b = pipe()
    assert b.poll() is False
    assert b.poll(0) is False
    a.send("x")
    assert b.poll(5) is True
    assert b.poll() is True
    assert b.poll(1) is True
    assert b.recv() == "x"
    assert b.poll() is False


@pytest.mark.parametrize("duplex", [True, False], ids=["duplex", "simplex"])
def test_poll_timeout(mp, pipe, duplex):
    a, b = pipe(duplex)
    reader = a if not duplex else b
    result, elapsed = _timed(reader.poll)
    assert result is False and elapsed < 0.5
    result, elapsed = _timed(reader.poll, -1)
    assert result is False and elapsed < 0.5
    result, elapsed = _timed(reader.poll, 0.2)
    assert result is False
    _assert_waited(elapsed, 0.2)
    result, elapsed = _timed(reader.poll, timeout=0.3)
    assert result is False
    _assert_waited(elapsed, 0.3)


def test_poll_returns_when_data_arrives(mp, pipe):
    a, b = pipe()
    with _Later(0.2, a.send, "late") as later:
        assert _returned_after(later, b.poll, 10) is True
    assert b.recv() == "late"
    with _Later(0.2, a.send, "later") as later:
        assert _returned_after(later, b.poll, None) is True  # no timeout: until data
    assert b.recv() == "later"


def test_poll_returns_when_the_peer_closes(mp, pipe):
    a, b = pipe()
    timer = threading.Timer(0.2, a.close)
    timer.start()
    try:
        result, elapsed = _timed(b.poll, 10)
    finally:
        timer.join(10)
    assert result is True and elapsed < 5
    with pytest.raises(EOFError):
        b.recv()


# ==========================================================================
# the wire: byte-compatible with multiprocessing.connection


def test_wire_format_written(mp, raw_peer):
    conn, peer = raw_peer()
    conn.send_bytes(b"abc")
    assert recv_exact(peer, 7) == b"\x00\x00\x00\x03abc"
    conn.send_bytes(b"")
    assert recv_exact(peer, 4) == b"\x00\x00\x00\x00"
    conn.send_bytes(b"0123456789", 2, 3)
    assert recv_exact(peer, 7) == b"\x00\x00\x00\x03234"
    big = os.urandom(70000)
    conn.send_bytes(big)
    assert recv_exact(peer, 4) == struct.pack("!i", 70000)
    assert recv_exact(peer, 70000) == big
    obj = {"a": [1, 2.5, "x"], "b": Payload(1, [])}
    conn.send(obj)
    assert pickle.loads(recv_frame(peer)) == obj
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(1)  # nothing more was written


def test_wire_format_read(mp, raw_peer):
    conn, peer = raw_peer()
    obj = ("tuple", [1, 2], {"k": b"v"})
    peer.sendall(frame(b"abc"))
    peer.sendall(frame(pickle.dumps(obj)))
    peer.sendall(frame(b""))
    peer.sendall(frame(b"one") + frame(b"two"))  # two frames in one write
    # the long header (-1, then an 8-byte length), as multiprocessing writes
    # above 2 GiB; its reader accepts it for any length
    peer.sendall(struct.pack("!i", -1) + struct.pack("!Q", 5) + b"hello")
    peer.sendall(struct.pack("!i", -1) + struct.pack("!Q", 0))
    peer.sendall(frame(b"x" * 300000)[:100000])  # the rest comes from a thread
    assert recv_bytes_within(conn) == b"abc"
    assert conn.recv() == obj
    assert conn.recv_bytes() == b""
    assert conn.recv_bytes() == b"one"
    assert conn.recv_bytes() == b"two"
    assert conn.recv_bytes() == b"hello"
    assert conn.recv_bytes() == b""

    def rest():
        rest_bytes = frame(b"x" * 300000)[100000:]
        for i in range(0, len(rest_bytes), 50000):
            time.sleep(0.02)
            peer.sendall(rest_bytes[i:i + 50000])

    task = ThreadTask(rest)
    assert conn.recv_bytes() == b"x" * 300000  # a frame in pieces
    task.result(10)


def test_interop_with_stdlib_connection_in_process(mp, closing):
    """impl Connection on one end of a socketpair, multiprocessing's on the other."""
    s1, s2 = socket.socketpair()
    closing.extend((s1, s2))
    ours = connection_on(conn_module(mp).Connection, s1)
    closing.append(ours)
    theirs = connection_on(multiprocessing.connection.Connection, s2)
    closing.append(theirs)
    for a, b in ((ours, theirs), (theirs, ours)):
        a.send(Payload("obj", [1, None, "é"]))
        a.send_bytes(b"raw bytes \x00\xff")
        a.send_bytes(b"0123456789", 4, 3)
        a.send_bytes(b"")
        a.send(b"x" * 20000)  # above multiprocessing's 16 KiB single-write limit
        a.send_bytes(array.array("i", [5, 6]))
        assert recv_within(b) == Payload("obj", [1, None, "é"])
        assert b.recv_bytes() == b"raw bytes \x00\xff"
        assert b.recv_bytes() == b"456"
        assert b.recv_bytes() == b""
        assert b.recv() == b"x" * 20000
        arr = array.array("i", [0, 0, 0])
        assert b.recv_bytes_into(arr, 4) == 8
        assert arr.tolist() == [0, 5, 6]
        assert b.poll() is False
    theirs.close()
    assert ours.poll(5) is True
    with pytest.raises(EOFError):
        ours.recv()


def _interop_child(fd, other_fd, kind):
    """Fork child: the `kind` Connection on fd answers the parent's sequence."""
    os.close(other_fd)
    conn = importlib.import_module(kind + ".connection").Connection(fd)
    obj = conn.recv()
    conn.send(("echo", obj))
    data = conn.recv_bytes()
    conn.send_bytes(data[::-1])
    big = conn.recv_bytes()
    conn.send(hashlib.sha256(big).hexdigest())
    conn.send_bytes(big)
    big_obj = conn.recv()
    conn.send(len(big_obj["blob"]))
    conn.send(big_obj)
    buf = bytearray(16)
    n = conn.recv_bytes_into(buf, 4)
    conn.send((n, bytes(buf)))
    conn.send_bytes(b"abcdefgh", 2, 3)
    conn.close()


@pytest.mark.parametrize("impl_end", ["parent", "child"])
def test_interop_with_stdlib_connection_across_fork(mp, closing, impl_end):
    """The impl in one process and multiprocessing in the other, both
    directions, objects and bytes, 1 MiB messages."""
    parent_kind, child_kind = (mp.name, "multiprocessing") if impl_end == "parent" else ("multiprocessing", mp.name)
    s1, s2 = socket.socketpair()
    closing.extend((s1, s2))
    p = FORK.Process(target=_interop_child, args=(s2.fileno(), s1.fileno(), child_kind), daemon=True)
    try:
        p.start()
        s2.close()
        conn = connection_on(importlib.import_module(parent_kind + ".connection").Connection, s1)
        closing.append(conn)
        obj = {"from": parent_kind, "n": list(range(100)), "p": Payload(2, [b"x"])}
        conn.send(obj)
        assert recv_within(conn) == ("echo", obj)
        conn.send_bytes(b"raw\x00bytes")
        assert recv_bytes_within(conn) == b"setyb\x00war"
        big = os.urandom(1 << 20)
        conn.send_bytes(big)
        assert recv_within(conn) == hashlib.sha256(big).hexdigest()
        assert recv_bytes_within(conn) == big
        big_obj = {"blob": big, "ints": list(range(1000))}
        conn.send(big_obj)
        assert recv_within(conn) == 1 << 20
        assert recv_within(conn) == big_obj
        conn.send_bytes(b"0123456789")
        assert recv_within(conn) == (10, b"\0" * 4 + b"0123456789" + b"\0" * 2)
        assert recv_bytes_within(conn) == b"cde"
        assert conn.poll(10) is True
        with pytest.raises(EOFError):
            conn.recv()
    finally:
        code = _finish(p)
    assert code == 0


# ==========================================================================
# truncated and corrupt frames: the same error as multiprocessing, no crash

LEN100 = struct.pack("!i", 100)
CORRUPT_FRAMES = {
    "nothing": b"",
    "partial_header": b"\x00\x00",
    "header_only": LEN100,
    "header_100_body_10": LEN100 + b"x" * 10,
    "header_100_body_99": LEN100 + b"x" * 99,
    "header_64MiB_body_10": struct.pack("!i", 64 << 20) + b"x" * 10,
    "long_header_truncated": struct.pack("!i", -1) + b"\x00\x00\x00",
    "long_header_body_truncated": struct.pack("!i", -1) + struct.pack("!Q", 100) + b"x" * 10,
    "good_frame_then_truncated": frame(b"good") + LEN100 + b"x" * 10,
}

READERS = {
    "recv_bytes": lambda c: c.recv_bytes(),
    "recv": lambda c: c.recv(),
    "recv_bytes_into": lambda c: c.recv_bytes_into(bytearray(256)),
    "recv_bytes(maxlength)": lambda c: c.recv_bytes(1000),
}


def _outcome(fn, conn):
    try:
        value = fn(conn)
    except Exception as exc:  # noqa: BLE001 - compared with the reference
        if isinstance(exc, OSError):
            return (type(exc).__name__, str(exc))
        return (type(exc).__name__,)
    return ("ok", value)


def _feed_and_read(Connection, data, reader, calls=3):
    """Write data on one end of a fresh socketpair, close it, read with a
    Connection on the other end `calls` times; the outcomes."""
    s1, s2 = socket.socketpair()
    try:
        s2.sendall(data)
        s2.close()
        conn = connection_on(Connection, s1)
        try:
            assert conn.poll(5) is True
            return [_outcome(reader, conn) for _ in range(calls)]
        finally:
            conn.close()
    finally:
        s1.close()
        s2.close()


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(CORRUPT_FRAMES))
def test_truncated_frame_raises_as_the_reference(mp, case, reader):
    data, fn = CORRUPT_FRAMES[case], READERS[reader]
    expected = _feed_and_read(multiprocessing.connection.Connection, data, fn)
    got = _feed_and_read(conn_module(mp).Connection, data, fn)
    assert got == expected


def test_negative_length_does_not_crash(mp, raw_peer):
    """A negative length other than -1: multiprocessing reads it as an empty
    message; a clearer OSError is accepted too.  No crash, no hang."""
    conn, peer = raw_peer()
    peer.sendall(struct.pack("!i", -5) + frame(b"after"))
    peer.close()
    assert conn.poll(5)
    try:
        got = conn.recv_bytes()
    except OSError:
        return
    assert got == b""
    assert conn.recv_bytes() == b"after"


def test_truncated_frame_from_a_dying_child(mp, closing):
    """A child killed in the middle of writing: the parent gets an error, not a hang."""
    s1, s2 = socket.socketpair()
    closing.extend((s1, s2))
    conn = connection_on(conn_module(mp).Connection, s1)
    closing.append(conn)
    p = FORK.Process(target=_write_then_die, args=(s2.fileno(),), daemon=True)
    try:
        p.start()
        s2.close()
        assert conn.poll(10)
        with pytest.raises(OSError, match="^got end of file during message$"):
            conn.recv_bytes()
    finally:
        code = _finish(p)
    assert code == 9


def _write_then_die(fd):
    os.write(fd, struct.pack("!i", 1 << 20) + b"partial" * 100)
    os._exit(9)


# ==========================================================================
# wait()


def test_wait_connections(mp, pipe):
    wait = conn_module(mp).wait
    a1, b1 = pipe()
    a2, b2 = pipe()
    r3, w3 = pipe(duplex=False)
    assert wait([a1, a2, r3], 0) == []
    b2.send("x")
    ready = wait([a1, a2, r3], 5)
    assert len(ready) == 1 and ready[0] is a2
    w3.send_bytes(b"y")
    b1.close()  # a closed peer counts as ready
    ready = wait([a1, a2, r3], 5)
    assert {id(c) for c in ready} == {id(a1), id(a2), id(r3)} and len(ready) == 3
    assert a2.recv() == "x" and r3.recv_bytes() == b"y"
    ready = wait((a2, r3, a1), 5)  # any iterable
    assert len(ready) == 1 and ready[0] is a1


def test_wait_timeout(mp, pipe):
    wait = conn_module(mp).wait
    a, b = pipe()
    result, elapsed = _timed(wait, [a, b], 0.2)
    assert result == []
    _assert_waited(elapsed, 0.2)
    result, elapsed = _timed(wait, [a], timeout=0)
    assert result == [] and elapsed < 0.5
    result, elapsed = _timed(wait, [], 0.1)
    assert result == []
    _assert_waited(elapsed, 0.1)


def test_wait_blocks_until_ready(mp, pipe):
    wait = conn_module(mp).wait
    a, b = pipe()
    with _Later(0.2, b.send, 1) as later:
        assert _returned_after(later, wait, [a]) == [a]


def test_wait_sockets_and_fds(mp, pipe, closing):
    wait = conn_module(mp).wait
    a, b = pipe()
    s1, s2 = socket.socketpair()
    closing.extend((s1, s2))
    rfd, wfd = os.pipe()
    closing.extend((rfd, wfd))
    assert wait([a, s1, rfd], 0) == []
    s2.sendall(b"!")
    ready = wait([a, s1, rfd], 5)
    assert len(ready) == 1 and ready[0] is s1
    os.write(wfd, b"!")
    ready = wait([a, s1, rfd], 5)
    assert ready == [s1, rfd] or ready == [rfd, s1]


def test_wait_process_sentinels(mp, pipe):
    wait = conn_module(mp).wait
    a, b = pipe()
    p = mp.get_context("fork").Process(target=time.sleep, args=(0.3,), daemon=True)
    try:
        p.start()
        sentinel = p.sentinel
        assert wait([sentinel, a], 0) == []
        ready, elapsed = _timed(wait, [a, sentinel], 10)
        assert ready == [sentinel]
        assert elapsed < 5
        assert wait([sentinel], 0) == [sentinel]  # stays ready
        p.join(5)
        assert p.exitcode == 0
    finally:
        _finish(p)


# ==========================================================================
# cross-process: fork children


def _child_echo_in_order(conn, n):
    for i in range(n):
        got = conn.recv()
        if got != ("m", i):
            conn.send(("bad", i, got))
            return
    for i in range(n):
        conn.send(("r", i))
    conn.send("done")
    conn.close()


def test_fork_child_many_messages_in_order(mp, pipe):
    a, b = pipe()
    n = 3000
    p = mp.get_context("fork").Process(target=_child_echo_in_order, args=(b, n), daemon=True)
    try:
        p.start()
        b.close()
        for i in range(n):
            a.send(("m", i))
        got = [recv_within(a) for _ in range(n + 1)]
        assert got == [("r", i) for i in range(n)] + ["done"]
        assert a.poll(10) is True
        with pytest.raises(EOFError):
            a.recv()
    finally:
        code = _finish(p)
    assert code == 0


def _child_large(conn, data, arr):
    conn.send_bytes(data)
    conn.send(data)
    if arr is not None:
        conn.send(arr)
    got = conn.recv_bytes()
    conn.send(hashlib.sha256(got).hexdigest())
    got = conn.recv()
    conn.send(hashlib.sha256(got).hexdigest())
    conn.close()


def test_fork_child_large_messages(mp, pipe):
    a, b = pipe()
    data = os.urandom(8 << 20)
    arr = None
    if numpy is not None:
        arr = numpy.arange(1 << 20, dtype=numpy.float64).reshape(1024, 1024)  # 8 MiB
    p = mp.get_context("fork").Process(target=_child_large, args=(b, data, arr), daemon=True)
    try:
        p.start()
        b.close()
        assert recv_bytes_within(a) == data
        assert recv_within(a) == data
        if arr is not None:
            got = recv_within(a)
            assert type(got) is numpy.ndarray
            assert got.dtype == arr.dtype and got.shape == arr.shape
            assert numpy.array_equal(got, arr)
        back = bytes(reversed(data[:1 << 20])) * 8
        a.send_bytes(back)
        assert recv_within(a) == hashlib.sha256(back).hexdigest()
        a.send(back)
        assert recv_within(a) == hashlib.sha256(back).hexdigest()
        assert a.poll(10)
        with pytest.raises(EOFError):
            a.recv()
    finally:
        code = _finish(p)
    assert code == 0


def _child_recv_into(conn):
    buf = bytearray(b"." * 32)
    n = conn.recv_bytes_into(buf, 10)
    conn.send((n, bytes(buf)))
    arr = array.array("i", [0] * 6)
    n = conn.recv_bytes_into(arr, 8)
    conn.send((n, arr.tolist()))
    try:
        conn.recv_bytes_into(bytearray(4))
    except multiprocessing.BufferTooShort as exc:
        conn.send(("BufferTooShort", exc.args[0]))
    conn.send_bytes(b"to the parent")
    conn.send_bytes(array.array("i", [11, 12, 13]))
    conn.close()


def test_fork_child_recv_bytes_into(mp, pipe):
    a, b = pipe()
    p = mp.get_context("fork").Process(target=_child_recv_into, args=(b,), daemon=True)
    try:
        p.start()
        b.close()
        a.send_bytes(b"payload")
        assert recv_within(a) == (7, b"." * 10 + b"payload" + b"." * 15)
        a.send_bytes(array.array("i", [1, 2, 3]))
        assert recv_within(a) == (12, [0, 0, 1, 2, 3, 0])
        a.send_bytes(b"too long for four")
        assert recv_within(a) == ("BufferTooShort", b"too long for four")
        buf = bytearray(20)
        assert a.poll(10)
        assert a.recv_bytes_into(buf, 5) == 13
        assert buf == b"\0" * 5 + b"to the parent" + b"\0" * 2
        arr = array.array("i", [0] * 5)
        assert a.poll(10)
        assert a.recv_bytes_into(arr, 4) == 12
        assert arr.tolist() == [0, 11, 12, 13, 0]
    finally:
        code = _finish(p)
    assert code == 0


def _child_simplex_writer(w, n):
    for i in range(n):
        w.send(i)
    w.send_bytes(b"x" * (1 << 20))
    w.close()


def test_fork_child_simplex_pipe(mp, pipe):
    r, w = pipe(duplex=False)
    p = mp.get_context("fork").Process(target=_child_simplex_writer, args=(w, 500), daemon=True)
    try:
        p.start()
        w.close()
        assert [recv_within(r) for _ in range(500)] == list(range(500))
        assert recv_bytes_within(r) == b"x" * (1 << 20)
        assert r.poll(10)
        with pytest.raises(EOFError):
            r.recv()
    finally:
        code = _finish(p)
    assert code == 0


# ==========================================================================
# blocking calls: the GIL is released, Ctrl+C interrupts (fresh subprocesses)


def _script(tmp_path, name, mp, body):
    """body run as a fresh script under mp, with CM its connection module."""
    return popen_impl_script(tmp_path, name, "CM = m.connection\n" + body, mp.name, "fork")


# name: (setup, blocking call in a thread, what the main thread then does)
GIL_CASES = {
    "recv": ("a, b = m.Pipe()", "a.recv()", "b.send('v')"),
    "recv_bytes": ("a, b = m.Pipe()", "a.recv_bytes()", "b.send_bytes(b'v')"),
    "recv_bytes_into": ("a, b = m.Pipe()", "a.recv_bytes_into(bytearray(4))", "b.send_bytes(b'v')"),
    "recv(simplex)": ("a, b = m.Pipe(False)", "a.recv()", "b.send('v')"),
    "poll(None)": ("a, b = m.Pipe()", "a.poll(None)", "b.send('v')"),
    "poll(10)": ("a, b = m.Pipe()", "a.poll(10)", "b.send('v')"),
    "wait": ("a, b = m.Pipe()", "len(CM.wait([a]))", "b.send('v')"),
    "send_bytes(8MiB)": ("a, b = m.Pipe()", "a.send_bytes(bytes(8 << 20)) or 'sent'",
                         "print('peer got', len(b.recv_bytes()), flush=True)"),
}

GIL_EXPECTED = {"recv": "'v'", "recv(simplex)": "'v'", "recv_bytes": "b'v'", "recv_bytes_into": "1",
                "poll(None)": "True", "poll(10)": "True", "wait": "1", "send_bytes(8MiB)": "'sent'"}


@pytest.mark.parametrize("case", list(GIL_CASES))
def test_blocked_call_lets_other_threads_run(mp, tmp_path, case):
    setup, call, finish = GIL_CASES[case]
    proc = _script(tmp_path, "gil", mp, GIL_SCRIPT.format(setup=setup, call=call, finish=finish))
    peer_line = f"peer got {8 << 20}" if case == "send_bytes(8MiB)" else None
    check_gil_script(proc, GIL_EXPECTED[case], peer_line)


# name: (setup, blocking call, expression printed after the interrupt, its expected repr)
AFTER = "(b.send(7), a.recv())[1]"
CTRL_C_CASES = {
    "recv": ("a, b = m.Pipe()", "a.recv()", AFTER, "7"),
    "recv(simplex)": ("a, b = m.Pipe(duplex=False)", "a.recv()", AFTER, "7"),
    "recv_bytes": ("a, b = m.Pipe()", "a.recv_bytes()", AFTER, "7"),
    "recv_bytes_into": ("a, b = m.Pipe()", "a.recv_bytes_into(bytearray(8))", AFTER, "7"),
    "poll(None)": ("a, b = m.Pipe()", "a.poll(None)", AFTER, "7"),
    "poll(60)": ("a, b = m.Pipe()", "a.poll(60)", AFTER, "7"),
    "wait": ("a, b = m.Pipe()", "CM.wait([a])", AFTER, "7"),
    "wait(60)": ("a, b = m.Pipe()", "CM.wait([a], 60)", AFTER, "7"),
    "send_bytes(8MiB)": ("a, b = m.Pipe()", "a.send_bytes(bytes(8 << 20))", "a.closed", "False"),
}


@pytest.mark.parametrize("case", list(CTRL_C_CASES))
def test_ctrl_c_interrupts_blocked_call(mp, tmp_path, case):
    setup, call, post, expected_post = CTRL_C_CASES[case]
    body = setup + "\n" + CTRL_C_SCRIPT.format(call=call, post=post)
    check_ctrl_c_script(_script(tmp_path, "ctrl_c", mp, body), expected_post)


# ==========================================================================
# cproc's own promises


def test_cproc_exports(cproc):
    import cproc.connection as cc

    assert cproc.BufferTooShort is multiprocessing.BufferTooShort
    for name in ("Connection", "Pipe", "wait"):
        assert callable(getattr(cc, name)), name
    a, b = cproc.Pipe()
    try:
        assert type(a) is cc.Connection and type(b) is cc.Connection
    finally:
        a.close()
        b.close()
    for method in ("fork", "spawn", "forkserver"):
        try:
            ctx = cproc.get_context(method)
        except ValueError:
            continue
        r, w = ctx.Pipe(duplex=False)
        try:
            assert type(r) is cc.Connection
            w.send(method)
            assert recv_within(r) == method
        finally:
            r.close()
            w.close()
