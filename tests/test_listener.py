"""Listener and Client: differential tests, cproc against multiprocessing (Python 3.11).

Every test that takes ``mp`` runs once per implementation (multiprocessing's
fork context, or cproc); ``Listener``, ``Client`` and ``Connection`` come from
``<impl>.connection``.  The expectations are what multiprocessing 3.11 shows
the user on Linux: addresses, return types, exception types and messages.

Notes on multiprocessing 3.11 that the expectations encode:

* The default family is 'AF_UNIX'; a default unix address is a fresh name
  ``listener-*`` in multiprocessing's per-process temp dir, and a unix
  socket's file is removed by close() (or when the listener is collected).
  The default 'AF_INET' address is ('localhost', 0), so ``address`` is
  ('127.0.0.1', <port>).  'AF_PIPE' is Windows only.
* The authkey's type is checked after the socket is bound (Listener) or
  connected (Client).
* The handshake: the listener sends a challenge and checks the digest, then
  answers the client's challenge.  A wrong key fails on both sides with
  ``AuthenticationError``: 'digest received was wrong' where the check failed
  and 'digest sent was rejected' on the other side.

The other side of a connection is a thread, or a fork child
(``mp.get_context('fork').Process``).
"""

import gc
import importlib
import os
import stat
import warnings

import multiprocessing
import multiprocessing.connection
from multiprocessing import util as mp_util

import pytest

from helpers.children import ThreadTask

pytestmark = pytest.mark.timeout(30)

KEY = b"secret key"
FAMILIES = ["AF_INET", "AF_UNIX"]


def conn_module(mp):
    """multiprocessing.connection or cproc.connection."""
    return importlib.import_module(mp.name + ".connection")


def other_module(mp):
    """The implementation that is not mp's."""
    return importlib.import_module(("cproc" if mp.name == "multiprocessing" else "multiprocessing") + ".connection")


def _is_socket(path):
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _echo_server(listener, n=1):
    """Accept one connection and echo n objects back, each wrapped in a tuple."""
    with listener.accept() as c:
        for _ in range(n):
            c.send(("echo", c.recv()))
        return type(c)


def _client_roundtrip(module, address, authkey, objs):
    with module.Client(address, authkey=authkey) as c:
        got = []
        for obj in objs:
            c.send(obj)
            got.append(c.recv())
        return type(c), got


def _expect_error(fn, *args, **kwargs):
    """(type, str) of the exception fn raises."""
    with pytest.raises(BaseException) as excinfo:
        fn(*args, **kwargs)
    return type(excinfo.value), str(excinfo.value)


OBJS = [None, 42, "text", b"\x00" * 100_000, {"a": [1, 2.5, (3, "x")]}, list(range(1000))]


# --------------------------------------------------------------------------
# API and addresses


def test_exported(mp):
    m = conn_module(mp)
    assert {"Listener", "Client"} <= set(m.__all__)
    assert m.Listener.__init__.__defaults__ == (None, None, 1, None)
    assert m.Client.__defaults__ == (None, None)


def test_default_address_is_a_unix_socket_in_the_temp_dir(mp):
    m = conn_module(mp)
    with m.Listener() as l:
        address = l.address
        assert type(address) is str
        assert multiprocessing.connection.address_type(address) == "AF_UNIX"
        assert os.path.dirname(address) == mp_util.get_temp_dir()
        assert os.path.basename(address).startswith("listener-")
        assert _is_socket(address)
        assert l.last_accepted is None
    assert not os.path.exists(address)


def test_default_unix_addresses_differ(mp):
    m = conn_module(mp)
    with m.Listener() as l1, m.Listener(family="AF_UNIX") as l2:
        assert l1.address != l2.address
        assert _is_socket(l1.address) and _is_socket(l2.address)


def test_default_inet_address(mp):
    m = conn_module(mp)
    with m.Listener(family="AF_INET") as l:
        host, port = l.address
        assert type(l.address) is tuple
        assert host == "127.0.0.1" and type(port) is int and port > 0
        assert l.last_accepted is None


def test_family_inferred_from_address(mp, tmp_path):
    m = conn_module(mp)
    with m.Listener(("localhost", 0)) as l:
        assert l.address[0] == "127.0.0.1"
    path = str(tmp_path / "sock")
    with m.Listener(path) as l:
        assert l.address == path
        assert _is_socket(path)
    assert not os.path.exists(path)


def test_abstract_unix_address(mp):
    m = conn_module(mp)
    name = f"\0cproc-test-listener-{os.getpid()}-{mp.name}"
    with m.Listener(name, authkey=KEY) as l:
        assert l.address == name.encode()  # getsockname() gives bytes for these
        server = ThreadTask(_echo_server, l)
        assert _client_roundtrip(m, l.address, KEY, [1]) == (m.Connection, [("echo", 1)])
        server.result()


def test_backlog(mp):
    m = conn_module(mp)
    with m.Listener(family="AF_INET", backlog=5) as l:
        clients = [m.Client(l.address) for _ in range(3)]
        try:
            for i, c in enumerate(clients):
                c.send(i)
            for i in range(3):
                with l.accept() as s:
                    assert s.recv() == i
        finally:
            for c in clients:
                c.close()


# --------------------------------------------------------------------------
# talking


@pytest.mark.parametrize("authkey", [None, KEY])
@pytest.mark.parametrize("family", FAMILIES)
def test_roundtrip_with_thread(mp, family, authkey):
    m = conn_module(mp)
    with m.Listener(family=family, authkey=authkey) as l:
        server = ThreadTask(_echo_server, l, len(OBJS))
        ctype, got = _client_roundtrip(m, l.address, authkey, OBJS)
        assert server.result() is m.Connection
        assert ctype is m.Connection
        assert got == [("echo", o) for o in OBJS]
        if family == "AF_INET":
            host, port = l.last_accepted
            assert host == "127.0.0.1" and type(port) is int and port != l.address[1]
        else:
            assert l.last_accepted == ""  # the client's socket is unnamed


def _child_client(modname, address, authkey):
    m = importlib.import_module(modname)
    with m.Client(address, authkey=authkey) as c:
        c.send(("hello from", os.getpid()))
        c.send_bytes(c.recv_bytes() * 2)


@pytest.mark.parametrize("family", FAMILIES)
def test_client_in_fork_child(mp, family):
    m = conn_module(mp)
    with m.Listener(family=family, authkey=KEY) as l:
        p = mp.get_context("fork").Process(target=_child_client, args=(m.__name__, l.address, KEY), daemon=True)
        p.start()
        try:
            with l.accept() as c:
                assert type(c) is m.Connection
                assert c.recv() == ("hello from", p.pid)
                c.send_bytes(b"ab")
                assert c.recv_bytes() == b"abab"
        finally:
            p.join(10)
        assert p.exitcode == 0


def _child_listener(modname, family, authkey, conn):
    m = importlib.import_module(modname)
    with m.Listener(family=family, authkey=authkey) as l:
        address = l.address
        conn.send(address)
        with l.accept() as c:
            c.send(c.recv() + 1)
    conn.send(os.path.exists(address) if family == "AF_UNIX" else False)


@pytest.mark.parametrize("family", FAMILIES)
def test_listener_in_fork_child(mp, family):
    m = conn_module(mp)
    r, w = multiprocessing.Pipe(duplex=False)
    p = mp.get_context("fork").Process(target=_child_listener, args=(m.__name__, family, KEY, w), daemon=True)
    p.start()
    w.close()
    try:
        address = r.recv()
        with m.Client(address, authkey=KEY) as c:
            assert type(c) is m.Connection
            c.send(41)
            assert c.recv() == 42
        assert r.recv() is False  # the child removed its socket file
    finally:
        r.close()
        p.join(10)
    assert p.exitcode == 0


def test_connections_are_blocking_and_not_inheritable(mp):
    m = conn_module(mp)
    with m.Listener(family="AF_INET") as l, m.Client(l.address) as c, l.accept() as s:
        for conn in (c, s):
            assert conn.readable and conn.writable
            assert os.get_blocking(conn.fileno())
            assert not os.get_inheritable(conn.fileno())


# --------------------------------------------------------------------------
# authentication


@pytest.mark.parametrize("family", FAMILIES)
def test_wrong_authkey(mp, family):
    m = conn_module(mp)
    with m.Listener(family=family, authkey=KEY) as l:
        server = ThreadTask(l.accept)
        client_error = _expect_error(m.Client, l.address, authkey=b"other key")
        assert server.join()
        assert client_error == (multiprocessing.AuthenticationError, "digest sent was rejected")
        assert (type(server.error), str(server.error)) == (
            multiprocessing.AuthenticationError, "digest received was wrong")
        server.error = None


def test_client_without_authkey(mp):
    m = conn_module(mp)
    with m.Listener(family="AF_INET", authkey=KEY) as l:
        server = ThreadTask(l.accept)
        with m.Client(l.address) as c:
            assert c.recv_bytes().startswith(b"#CHALLENGE#")
        assert server.join()
        assert type(server.error) is EOFError
        server.error = None


@pytest.mark.parametrize("authkey", ["secret", bytearray(b"secret"), 0])
def test_listener_authkey_type(mp, tmp_path, authkey):
    m = conn_module(mp)
    path = str(tmp_path / "sock")
    # the type is checked after binding: multiprocessing leaves its bound
    # socket to be collected (a ResourceWarning under -X dev), cproc closes it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        assert _expect_error(m.Listener, path, authkey=authkey) == (TypeError, "authkey should be a byte string")
        gc.collect()
    assert not os.path.exists(path)


@pytest.mark.parametrize("authkey", ["secret", bytearray(b"secret"), 0])
def test_client_authkey_type(mp, authkey):
    m = conn_module(mp)
    with m.Listener(family="AF_INET") as l:
        # the type is checked after connecting: the listener sees a
        # connection that is closed at once (or when collected)
        assert _expect_error(m.Client, l.address, authkey=authkey) == (TypeError, "authkey should be a byte string")
        gc.collect()
        with l.accept() as s:
            with pytest.raises(EOFError):
                s.recv()


# --------------------------------------------------------------------------
# closing


@pytest.mark.parametrize("family", FAMILIES)
def test_closed_listener(mp, family):
    m = conn_module(mp)
    l = m.Listener(family=family)
    address = l.address
    l.close()
    l.close()  # idempotent
    assert _expect_error(l.accept) == (OSError, "listener is closed")
    assert _expect_error(lambda: l.address) == (AttributeError, "'NoneType' object has no attribute '_address'")
    assert _expect_error(lambda: l.last_accepted) == (
        AttributeError, "'NoneType' object has no attribute '_last_accepted'")
    if family == "AF_UNIX":
        assert not os.path.exists(address)
        assert _expect_error(m.Client, address)[0] is FileNotFoundError
    else:
        assert _expect_error(m.Client, address)[0] is ConnectionRefusedError


def test_context_managers(mp):
    m = conn_module(mp)
    with m.Listener() as l:
        address = l.address
        server = ThreadTask(_echo_server, l)
        with m.Client(address) as c:
            c.send("x")
            assert c.recv() == ("echo", "x")
        assert c.closed
        server.result()
    assert not os.path.exists(address)
    assert _expect_error(l.accept) == (OSError, "listener is closed")


def test_socket_file_removed_when_the_with_block_raises(mp):
    m = conn_module(mp)
    with pytest.raises(ZeroDivisionError):
        with m.Listener() as l:
            address = l.address
            assert _is_socket(address)
            1 / 0
    assert not os.path.exists(address)


def test_socket_file_removed_when_listener_is_collected(mp):
    m = conn_module(mp)
    l = m.Listener()
    address = l.address
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        del l
        gc.collect()
    assert not os.path.exists(address)


def test_accepted_connection_outlives_listener(mp):
    m = conn_module(mp)
    with m.Listener() as l:
        c = m.Client(l.address)
        s = l.accept()
    with c, s:
        c.send([1, 2])
        assert s.recv() == [1, 2]
        s.close()
        with pytest.raises(EOFError):
            c.recv()


# --------------------------------------------------------------------------
# bad families and addresses


def test_af_pipe_is_windows_only(mp):
    m = conn_module(mp)
    error = (ValueError, "Family AF_PIPE is not recognized.")
    assert _expect_error(m.Listener, family="AF_PIPE") == error
    assert _expect_error(m.Listener, r"\\.\pipe\cproc-test") == error
    assert _expect_error(m.Client, r"\\.\pipe\cproc-test") == error
    assert _expect_error(m.Client, ("localhost", 1), family="AF_PIPE") == error


def test_bad_family_and_address(mp):
    m = conn_module(mp)
    assert _expect_error(m.Listener, family="AF_FOO") == (ValueError, "unrecognized family")
    assert _expect_error(m.Listener, ("localhost", 0), family="AF_FOO") == (
        AttributeError, "module 'socket' has no attribute 'AF_FOO'")
    assert _expect_error(m.Listener, 42) == (TypeError, "address type of 42 unrecognized")
    assert _expect_error(m.Client, 42) == (TypeError, "address type of 42 unrecognized")
    assert _expect_error(m.Client, None) == (ValueError, "address type of None unrecognized")


def test_client_family_is_only_validated(mp):
    # multiprocessing picks the socket family from the address, not `family`
    m = conn_module(mp)
    with m.Listener(family="AF_INET") as l, m.Client(l.address, family="AF_UNIX") as c, l.accept() as s:
        c.send(1)
        assert s.recv() == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_address_in_use(mp, family):
    m = conn_module(mp)
    with m.Listener(family=family) as l:
        err = _expect_error(m.Listener, l.address)
        assert err[0] is OSError and err[1].startswith("[Errno 98]")
        if family == "AF_UNIX":
            assert _is_socket(l.address)  # the failed listener did not remove it


# --------------------------------------------------------------------------
# one implementation at each end


@pytest.mark.parametrize("family", FAMILIES)
def test_cross_module_client(mp, family):
    """mp's Listener, the other implementation's Client."""
    m, other = conn_module(mp), other_module(mp)
    with m.Listener(family=family, authkey=KEY) as l:
        server = ThreadTask(_echo_server, l, len(OBJS))
        ctype, got = _client_roundtrip(other, l.address, KEY, OBJS)
        assert server.result() is m.Connection
        assert ctype is other.Connection
        assert got == [("echo", o) for o in OBJS]


def test_cross_module_wrong_authkey(mp):
    m, other = conn_module(mp), other_module(mp)
    with m.Listener(authkey=KEY) as l:
        server = ThreadTask(l.accept)
        assert _expect_error(other.Client, l.address, authkey=b"nope") == (
            multiprocessing.AuthenticationError, "digest sent was rejected")
        assert server.join()
        assert (type(server.error), str(server.error)) == (
            multiprocessing.AuthenticationError, "digest received was wrong")
        server.error = None


def test_cross_module_fork_child(mp):
    """mp's Listener, the other implementation's Client in a fork child."""
    m, other = conn_module(mp), other_module(mp)
    with m.Listener(family="AF_INET", authkey=KEY) as l:
        p = multiprocessing.get_context("fork").Process(
            target=_child_client, args=(other.__name__, l.address, KEY), daemon=True)
        p.start()
        try:
            with l.accept() as c:
                assert c.recv() == ("hello from", p.pid)
                c.send_bytes(b"xy")
                assert c.recv_bytes() == b"xyxy"
        finally:
            p.join(10)
        assert p.exitcode == 0


# --------------------------------------------------------------------------
# cproc beyond multiprocessing 3.11


def test_empty_authkey_does_the_handshake(cproc):
    """Listener(authkey=b'') authenticates, as multiprocessing's does in 3.13
    (bpo-43952); 3.11.7's skips the handshake, so a Client(authkey=b'') hangs."""
    with cproc.connection.Listener(authkey=b"") as l:
        server = ThreadTask(_echo_server, l)
        assert _client_roundtrip(cproc.connection, l.address, b"", [7]) == (cproc.connection.Connection, [("echo", 7)])
        server.result()
        server = ThreadTask(l.accept)  # a client with another key is refused
        assert _expect_error(cproc.connection.Client, l.address, authkey=b"x")[0] is multiprocessing.AuthenticationError
        assert server.join() and type(server.error) is multiprocessing.AuthenticationError
        server.error = None
