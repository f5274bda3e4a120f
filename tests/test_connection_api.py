"""The connection module's API surface: differential tests, cproc against multiprocessing (3.11).

Every test runs once per implementation (fixture ``mp``: multiprocessing's
fork context, or cproc; select a side with ``-k multiprocessing`` or
``-k cproc``).  ``Pipe`` comes from ``mp``, everything else from
``<impl>.connection`` (or ``<impl>.queues``).  The expectations are what
multiprocessing 3.11 shows the user:

* the module's public names: the exceptions are multiprocessing's own classes
  (``multiprocessing.AuthenticationError``, ``multiprocessing.BufferTooShort``),
  the constants have its values, and whatever makes a connection
  (Listener, Client, SocketListener, SocketClient, XmlListener, XmlClient,
  rebuild_connection) hands out the implementation's own Connection;
  ``queues.Empty``/``queues.Full`` are ``queue.Empty``/``queue.Full``;
* ``wait()`` checks its objects as multiprocessing's selector does: neither an
  int nor something whose ``fileno()`` gives one -> ``ValueError("Invalid file
  object: %r")``, a negative fd -> ``ValueError("Invalid file descriptor: -1")``,
  the same fd twice -> ``KeyError("%r (FD n) is already registered")``, and an
  OSError from ``fileno()`` (a closed Connection) passes through; ``wait([])``
  without a timeout blocks (Ctrl+C interrupts it);
* ``inspect.signature()`` of Connection and its methods gives
  multiprocessing's parameter names and defaults (a C method's ``self`` is
  positional-only, so the unbound signatures are compared by names and
  defaults; the bound ones and the class's are compared as strings);
* every Connection argument can be passed by keyword, as multiprocessing's
  Python methods allow, and ``recv_bytes(maxlength)`` compares maxlength as
  multiprocessing does (``maxlength < 0``, then ``size > maxlength``), so a
  float such as 2.5 works.
"""

import fractions
import importlib
import inspect
import os
import queue
import time

import multiprocessing
import multiprocessing.connection
import pytest

from helpers.children import ThreadTask
from helpers.scripts import (CTRL_C_SCRIPT, GIL_SCRIPT, check_ctrl_c_script, check_gil_script,
    popen_impl_script)

pytestmark = pytest.mark.timeout(30)

MPC = multiprocessing.connection


def conn_module(mp):
    """multiprocessing.connection or cproc.connection."""
    return importlib.import_module(mp.name + ".connection")


def raised(fn, *args, **kwargs):
    """(type, args) of what fn(*args, **kwargs) raised (fails if it returned)."""
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - compared by the test
        return type(exc), exc.args
    raise AssertionError(f"returned {result!r} instead of raising")


# ==========================================================================
# public names


# multiprocessing.connection's public names that are not modules it imported
PUBLIC_NAMES = sorted(name for name, value in vars(MPC).items()
                      if not name.startswith("_") and not inspect.ismodule(value))

# the names that are multiprocessing's own objects (they make no connection);
# CHALLENGE, WELCOME and FAILURE are public up to 3.11 only (3.12: _CHALLENGE, ...)
SHARED_OBJECTS = [name for name in ["AuthenticationError", "BufferTooShort", "BUFSIZE", "CHALLENGE",
                                    "CONNECTION_TIMEOUT", "ConnectionWrapper", "FAILURE", "MESSAGE_LENGTH",
                                    "WELCOME", "address_type", "answer_challenge", "arbitrary_address",
                                    "default_family", "deliver_challenge", "families"]
                  if name in PUBLIC_NAMES]


def test_public_names_of_multiprocessing_connection(mp):
    C = conn_module(mp)
    assert "SocketListener" in PUBLIC_NAMES and "XmlClient" in PUBLIC_NAMES  # the list is not empty
    missing = [name for name in PUBLIC_NAMES if not hasattr(C, name)]
    assert missing == []


@pytest.mark.parametrize("name", SHARED_OBJECTS)
def test_shared_objects_are_multiprocessings(mp, name):
    assert getattr(conn_module(mp), name) is getattr(MPC, name)


def test_exceptions_are_multiprocessings_classes(mp):
    C = conn_module(mp)
    assert C.AuthenticationError is multiprocessing.AuthenticationError
    assert C.BufferTooShort is multiprocessing.BufferTooShort
    assert issubclass(C.BufferTooShort, multiprocessing.ProcessError)


def test_buffer_too_short_is_catchable_from_the_module(mp, pipe):
    C = conn_module(mp)
    a, b = pipe()
    a.send_bytes(b"hello")
    with pytest.raises(C.BufferTooShort) as info:
        b.recv_bytes_into(bytearray(2))
    assert info.value.args == (b"hello",)


def test_queues_empty_and_full(mp):
    Q = importlib.import_module(mp.name + ".queues")
    assert Q.Empty is queue.Empty
    assert Q.Full is queue.Full
    q = mp.Queue(1)
    try:
        with pytest.raises(Q.Empty):
            q.get(timeout=0.01)
        q.put(1)
        with pytest.raises(Q.Full):
            q.put(2, timeout=0.01)
        assert q.get(timeout=10) == 1
    finally:
        q.close()
        q.join_thread()


def test_challenge_handshake_and_authentication_error(mp, pipe):
    C = conn_module(mp)
    # right key: both sides return None
    a, b = pipe()
    server = ThreadTask(C.deliver_challenge, a, b"key")
    assert C.answer_challenge(b, b"key") is None
    assert server.result() is None
    # wrong key: each side raises AuthenticationError, caught through the module's name
    a, b = pipe()
    server = ThreadTask(C.deliver_challenge, a, b"key")
    with pytest.raises(C.AuthenticationError) as info:
        C.answer_challenge(b, b"other")
    assert str(info.value) == "digest sent was rejected"
    assert server.join()
    assert type(server.error) is C.AuthenticationError
    assert str(server.error) == "digest received was wrong"


def test_address_helpers(mp):
    C = conn_module(mp)
    assert C.families == ["AF_INET", "AF_UNIX"]
    assert C.default_family == "AF_UNIX"
    assert C.address_type(("localhost", 0)) == "AF_INET"
    assert C.address_type("/tmp/x") == "AF_UNIX"
    assert C.address_type(C.arbitrary_address("AF_UNIX")) == "AF_UNIX"
    assert (C.BUFSIZE, C.CONNECTION_TIMEOUT) == (8192, 20.0)


def test_socket_listener_and_client_hand_out_the_modules_connections(mp, closing):
    C = conn_module(mp)
    address = C.arbitrary_address("AF_UNIX")
    listener = C.SocketListener(address, "AF_UNIX")
    closing.append(listener)
    assert isinstance(listener, MPC.SocketListener)
    client = C.SocketClient(address)
    closing.append(client)
    server = listener.accept()
    closing.append(server)
    assert type(client) is C.Connection and type(server) is C.Connection
    client.send({"x": 1})
    assert server.poll(10) and server.recv() == {"x": 1}
    server.send_bytes(b"back")
    assert client.poll(10) and client.recv_bytes() == b"back"
    listener.close()
    assert not os.path.exists(address)  # multiprocessing's SocketListener unlinks the socket file


@pytest.mark.parametrize("authkey", [None, b"secret"])
def test_listener_and_client_hand_out_the_modules_connections(mp, closing, authkey):
    C = conn_module(mp)
    listener = C.Listener(authkey=authkey)
    closing.append(listener)
    if authkey is None:
        client = C.Client(listener.address)
    else:  # the handshake needs both sides at once
        task = ThreadTask(lambda: C.Client(listener.address, authkey=authkey))
    server = listener.accept()
    closing.append(server)
    if authkey is not None:
        client = task.result()
    closing.append(client)
    assert type(client) is C.Connection and type(server) is C.Connection
    client.send("ping")
    assert server.poll(10) and server.recv() == "ping"


def test_xml_listener_and_client(mp, closing):
    C = conn_module(mp)
    listener = C.XmlListener()
    closing.append(listener)
    assert isinstance(listener, C.Listener)
    client = C.XmlClient(listener.address)
    closing.append(client)
    server = listener.accept()
    closing.append(server)
    for end in (client, server):
        assert type(end) is MPC.ConnectionWrapper
        assert type(end._conn) is C.Connection
    client.send([1, "two", {"three": 3.0}])
    assert server.poll(10)
    assert server.recv() == [1, "two", {"three": 3.0}]
    server.send("reply")
    assert client.poll(10) and client.recv() == "reply"


def test_rebuild_connection_makes_the_modules_connection(mp, closing):
    C = conn_module(mp)
    r, w = os.pipe()
    closing.append(w)

    class DetachableFd:  # what reduce_connection's DupFd gives the receiving side
        def detach(self):
            return r

    conn = C.rebuild_connection(DetachableFd(), True, False)
    closing.append(conn)
    assert type(conn) is C.Connection
    assert (conn.fileno(), conn.readable, conn.writable) == (r, True, False)
    assert callable(C.reduce_connection)


# ==========================================================================
# wait(): bad objects


class FilenoRaises:
    def __init__(self, exc):
        self.exc = exc

    def fileno(self):
        raise self.exc


class FilenoReturns:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value


def _noop():
    pass


@pytest.mark.parametrize("case", ["None", "process", "str", "fileno ValueError", "fileno TypeError",
                                  "fileno returns a non-number", "fileno returns None"])
def test_wait_invalid_file_object(mp, pipe, case):
    wait = conn_module(mp).wait
    a, b = pipe()
    b.send(1)  # something is ready: the bad object is refused all the same
    obj = {"None": None,
           "process": mp.Process(target=_noop),   # a common slip: the Process, not p.sentinel
           "str": "3",
           "fileno ValueError": FilenoRaises(ValueError("I/O operation on closed file")),
           "fileno TypeError": FilenoRaises(TypeError("nope")),
           "fileno returns a non-number": FilenoReturns("x"),
           "fileno returns None": FilenoReturns(None)}[case]
    for timeout in (0, None):
        assert raised(wait, [a, obj], timeout) == (ValueError, (f"Invalid file object: {obj!r}",))
    assert wait([a], 0) == [a]  # nothing was consumed


@pytest.mark.parametrize("case", ["-1 int", "-1 from fileno"])
def test_wait_negative_fd(mp, pipe, case):
    wait = conn_module(mp).wait
    a, _ = pipe()
    obj = -1 if case == "-1 int" else FilenoReturns(-1)
    assert raised(wait, [a, obj], 0) == (ValueError, ("Invalid file descriptor: -1",))


def test_wait_fileno_oserror_passes_through(mp, pipe):
    wait = conn_module(mp).wait
    a, b = pipe()
    b.close()
    assert raised(wait, [a, b], 0) == (OSError, ("handle is closed",))
    err = OSError(9, "Bad file descriptor")
    exc_type, args = raised(wait, [FilenoRaises(err)], 0)
    assert (exc_type, args) == (OSError, (9, "Bad file descriptor"))


def test_wait_fileno_conversions(mp, pipe):
    """fileno()'s value goes through int(), as a selector does."""
    wait = conn_module(mp).wait
    a, b = pipe()
    b.send(1)
    by_str = FilenoReturns(str(a.fileno()))
    assert wait([by_str], 0) == [by_str]
    assert wait([b], 0) == []


@pytest.mark.parametrize("case", ["same object", "object then its fd", "fd then the object", "same int"])
def test_wait_same_fd_twice(mp, pipe, case):
    wait = conn_module(mp).wait
    a, b = pipe()
    fd = a.fileno()
    first, second = {"same object": (a, a), "object then its fd": (a, fd),
                     "fd then the object": (fd, a), "same int": (fd, fd)}[case]
    assert raised(wait, [first, b, second], 0) == (KeyError, (f"{second!r} (FD {fd}) is already registered",))


def test_wait_valid_objects_in_order(mp, pipe):
    """The objects come back as given (the same objects), ready ones only."""
    wait = conn_module(mp).wait
    a, b = pipe()
    c, d = pipe()
    b.send(1)
    d.send(2)
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        ready = wait([c, FilenoReturns(w), r, a], 5)
        assert ready == [c, r, a]
        assert ready[0] is c and ready[2] is a
        assert wait(iter([b, d]), 0) == []  # any iterable
    finally:
        os.close(r)
        os.close(w)


# ==========================================================================
# wait([]): sleeps


def test_wait_empty_with_a_timeout_sleeps(mp):
    wait = conn_module(mp).wait
    for objects in ([], (), iter([])):
        t0 = time.monotonic()
        assert wait(objects, 0.2) == []
        elapsed = time.monotonic() - t0
        assert 0.19 <= elapsed < 2.2, f"returned after {elapsed:.3f}s for a 0.2s timeout"


def _script(tmp_path, name, mp, body):
    return popen_impl_script(tmp_path, name, "CM = m.connection\n" + body, mp.name, "fork")


def test_wait_empty_without_a_timeout_blocks_until_ctrl_c(mp, tmp_path):
    body = "a, b = m.Pipe()\n" + CTRL_C_SCRIPT.format(call="CM.wait([])", post="(b.send(7), a.recv())[1]")
    check_ctrl_c_script(_script(tmp_path, "wait_empty", mp, body), "7")


def test_wait_empty_lets_other_threads_run(mp, tmp_path):
    body = GIL_SCRIPT.format(setup="", call="CM.wait([], 1.0)", finish="pass")
    check_gil_script(_script(tmp_path, "wait_empty_gil", mp, body), "[]")


# ==========================================================================
# inspect.signature


# what multiprocessing 3.11 shows: (names, defaults) after self
METHOD_PARAMETERS = {
    "send": [("obj", inspect.Parameter.empty)],
    "recv": [],
    "send_bytes": [("buf", inspect.Parameter.empty), ("offset", 0), ("size", None)],
    "recv_bytes": [("maxlength", None)],
    "recv_bytes_into": [("buf", inspect.Parameter.empty), ("offset", 0)],
    "poll": [("timeout", 0.0)],
    "fileno": [],
    "close": [],
    "__enter__": [],
    "__exit__": [("exc_type", inspect.Parameter.empty), ("exc_value", inspect.Parameter.empty),
                 ("exc_tb", inspect.Parameter.empty)],
}

BOUND_SIGNATURES = {
    "send": "(obj)",
    "recv": "()",
    "send_bytes": "(buf, offset=0, size=None)",
    "recv_bytes": "(maxlength=None)",
    "recv_bytes_into": "(buf, offset=0)",
    "poll": "(timeout=0.0)",
    "fileno": "()",
    "close": "()",
    "__enter__": "()",
}


def test_signature_of_the_class(mp):
    C = conn_module(mp)
    assert str(inspect.signature(C.Connection)) == "(handle, readable=True, writable=True)"


@pytest.mark.parametrize("name", list(METHOD_PARAMETERS))
def test_signature_of_methods(mp, name):
    C = conn_module(mp)
    params = list(inspect.signature(getattr(C.Connection, name)).parameters.values())
    assert params[0].name == "self"
    assert [(p.name, p.default) for p in params[1:]] == METHOD_PARAMETERS[name]


@pytest.mark.parametrize("name", list(BOUND_SIGNATURES))
def test_signature_of_bound_methods(mp, pipe, name):
    a, _ = pipe()
    assert str(inspect.signature(getattr(a, name))) == BOUND_SIGNATURES[name]


def test_signature_binds_keywords(mp, pipe):
    a, _ = pipe()
    assert inspect.signature(a.send).bind(obj=1).arguments == {"obj": 1}
    assert inspect.signature(a.send_bytes).bind(b"x", size=1).arguments == {"buf": b"x", "size": 1}


def test_docstrings_kept(mp):
    C = conn_module(mp)
    assert C.Connection.send.__doc__ == "Send a (picklable) object"
    assert C.Connection.poll.__doc__ == "Whether there is any input available to be read"


# ==========================================================================
# keyword arguments


def test_send_by_keyword(mp, pipe):
    a, b = pipe()
    assert a.send(obj={"k": 1}) is None
    assert b.poll(10) and b.recv() == {"k": 1}


def test_send_argument_errors(mp, pipe):
    a, b = pipe()
    for args, kwargs in [((), {}), ((1, 2), {}), ((1,), {"obj": 2}), ((), {"ob": 1}), ((), {"obj": 1, "x": 2})]:
        exc_type, _ = raised(a.send, *args, **kwargs)
        assert exc_type is TypeError, (args, kwargs)
    assert not b.poll(0)  # nothing was sent


def test_other_methods_by_keyword(mp, pipe):
    a, b = pipe()
    assert a.send_bytes(buf=b"abcdef", offset=1, size=3) is None
    assert b.poll(timeout=10) is True
    assert b.recv_bytes(maxlength=3) == b"bcd"
    a.send_bytes(b"xy", size=None)
    buf = bytearray(4)
    assert b.recv_bytes_into(buf=buf, offset=1) == 2
    assert buf == bytearray(b"\0xy\0")
    assert b.poll(timeout=0) is False
    a.send_bytes(b"q")
    assert b.recv_bytes_into(bytearray(1), offset=0) == 1


def test_exit_needs_its_three_arguments(mp, pipe):
    a, _ = pipe()
    exc_type, _ = raised(a.__exit__)
    assert exc_type is TypeError
    assert a.closed is False
    assert a.__exit__(None, None, None) is None
    assert a.closed is True


# ==========================================================================
# recv_bytes(maxlength) compared as multiprocessing compares it


@pytest.mark.parametrize("maxlength, expected", [
    (2.5, b"ab"),
    (2.0, b"ab"),
    (float("inf"), b"ab"),
    (float("nan"), b"ab"),          # nan < 0 and 2 > nan are both false
    (fractions.Fraction(5, 2), b"ab"),
    (True, OSError),                # 2 > True
    (2 ** 70, b"ab"),
    (1.5, OSError),
])
def test_recv_bytes_maxlength_numbers(mp, pipe, maxlength, expected):
    a, b = pipe()
    a.send_bytes(b"ab")
    assert b.poll(10)
    if expected is OSError:
        assert raised(b.recv_bytes, maxlength) == (OSError, ("bad message length",))
        assert (b.closed, b.readable, b.writable) == (False, False, True)  # duplex: now write-only
    else:
        assert b.recv_bytes(maxlength) == expected
        a.send("next")
        assert b.poll(10) and b.recv() == "next"


@pytest.mark.parametrize("maxlength, expected", [
    (-0.5, (ValueError, ("negative maxlength",))),
    (-2 ** 70, (ValueError, ("negative maxlength",))),
    (float("-inf"), (ValueError, ("negative maxlength",))),
    ("x", (TypeError, ("'<' not supported between instances of 'str' and 'int'",))),
    (b"2", (TypeError, ("'<' not supported between instances of 'bytes' and 'int'",))),
])
def test_recv_bytes_maxlength_refused_before_reading(mp, pipe, maxlength, expected):
    a, b = pipe()
    a.send_bytes(b"ab")
    assert raised(b.recv_bytes, maxlength) == expected
    assert raised(b.recv_bytes, maxlength=maxlength) == expected
    assert b.recv_bytes() == b"ab"  # the refused calls read nothing
