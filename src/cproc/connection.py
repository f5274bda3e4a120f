"""cproc.connection: Connection, Pipe and wait().

Connection is a C type (csrc/connection.c) whose framing is byte-compatible
with multiprocessing.connection, so either module can sit at either end of a
pipe or socket. A Connection pickles as multiprocessing's do: its fd is handed
to a starting spawn/forkserver child, or to a running process through
multiprocessing's resource sharer (SCM_RIGHTS over a unix socket).
Listener and Client are multiprocessing's, handing out cproc Connections; the
authentication handshake is multiprocessing's own (deliver_challenge and
answer_challenge), so either module can sit at either end.
"""

import os
import socket

from multiprocessing import connection as _mpc
from multiprocessing import reduction as _mp_reduction

from . import _cproc

__all__ = ["Client", "Connection", "Listener", "Pipe", "wait"]

Connection = _cproc.Connection


def Pipe(duplex=True):
    """Returns pair of connection objects at either end of a pipe"""
    if duplex:
        s1, s2 = socket.socketpair()
        s1.setblocking(True)
        s2.setblocking(True)
        c1 = Connection(s1.detach())
        c2 = Connection(s2.detach())
    else:
        fd1, fd2 = os.pipe()
        c1 = Connection(fd1, writable=False)
        c2 = Connection(fd2, readable=False)
    return c1, c2


class _SocketListener(_mpc.SocketListener):
    """multiprocessing's bound, listening socket (it unlinks a unix socket's
    file on close or at exit); accept() hands out cproc Connections."""

    def accept(self):
        s, self._last_accepted = self._socket.accept()
        s.setblocking(True)
        return Connection(s.detach())


def _check_authkey(authkey, conn):
    if authkey is not None and not isinstance(authkey, bytes):
        conn.close()
        raise TypeError('authkey should be a byte string')


def _authenticate(conn, authkey, server):
    try:
        if server:
            _mpc.deliver_challenge(conn, authkey)
            _mpc.answer_challenge(conn, authkey)
        else:
            _mpc.answer_challenge(conn, authkey)
            _mpc.deliver_challenge(conn, authkey)
    except BaseException:
        conn.close()
        raise


class Listener(object):
    '''
    Returns a listener object.

    This is a wrapper for a bound socket which is 'listening' for
    connections.
    '''
    def __init__(self, address=None, family=None, backlog=1, authkey=None):
        family = family or (address and _mpc.address_type(address)) \
                 or _mpc.default_family
        address = address or _mpc.arbitrary_address(family)
        _mpc._validate_family(family)       # 'AF_PIPE' is Windows only
        self._listener = _SocketListener(address, family, backlog)
        _check_authkey(authkey, self._listener)
        self._authkey = authkey

    def accept(self):
        '''
        Accept a connection on the bound socket of `self`.

        Returns a `Connection` object.
        '''
        if self._listener is None:
            raise OSError('listener is closed')
        c = self._listener.accept()
        # 'is not None' as in 3.13 (bpo-43952): 3.11's `if self._authkey`
        # skips the handshake for b'', and a Client(authkey=b'') then hangs
        if self._authkey is not None:
            _authenticate(c, self._authkey, server=True)
        return c

    def close(self):
        '''
        Close the bound socket of `self`.
        '''
        listener = self._listener
        if listener is not None:
            self._listener = None
            listener.close()

    @property
    def address(self):
        return self._listener._address

    @property
    def last_accepted(self):
        return self._listener._last_accepted

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()


def Client(address, family=None, authkey=None):
    '''
    Returns a connection to the address of a `Listener`
    '''
    family = family or _mpc.address_type(address)
    _mpc._validate_family(family)       # only validated, as multiprocessing does
    with socket.socket(getattr(socket, _mpc.address_type(address))) as s:
        s.setblocking(True)
        s.connect(address)
        c = Connection(s.detach())
    _check_authkey(authkey, c)
    if authkey is not None:
        _authenticate(c, authkey, server=False)
    return c


def _fileno(obj):
    if isinstance(obj, int):
        return obj
    return obj.fileno()


def wait(object_list, timeout=None):
    """Wait till an object in object_list is ready/readable.

    Returns list of those objects in object_list which are ready/readable.
    """
    object_list = list(object_list)
    if not object_list:
        if timeout is None:
            raise ValueError("wait() with no objects and no timeout would block forever")
        _cproc.wait_fds([], timeout)
        return []
    fds = [_fileno(o) for o in object_list]
    ready = set(_cproc.wait_fds(fds, timeout))
    return [o for o, fd in zip(object_list, fds) if fd in ready]


def _reduce_connection(conn):
    df = _mp_reduction.DupFd(conn.fileno())
    return _rebuild_connection, (df, conn.readable, conn.writable)


def _rebuild_connection(df, readable, writable):
    return Connection(df.detach(), readable, writable)


_mp_reduction.register(Connection, _reduce_connection)
