"""cproc.connection: Connection, Pipe and wait().

Connection is a C type (csrc/connection.c) whose framing is byte-compatible
with multiprocessing.connection, so either module can sit at either end of a
pipe or socket. A Connection pickles as multiprocessing's do: its fd is handed
to a starting spawn/forkserver child, or to a running process through
multiprocessing's resource sharer (SCM_RIGHTS over a unix socket).
Listener and Client are multiprocessing's, handing out cproc Connections; the
authentication handshake is multiprocessing's own (deliver_challenge and
answer_challenge), so either module can sit at either end.
multiprocessing.connection's other public names are here too: its own objects
where they do not make connections (the exceptions, the handshake, the address
helpers and constants, ConnectionWrapper), cproc versions where they do
(SocketListener, SocketClient, XmlListener, XmlClient, reduce_connection).
wait() checks its objects as multiprocessing's selector does, then polls in C.
"""

import os
import socket
import sys

from multiprocessing import connection as _mpc
from multiprocessing import reduction as _mp_reduction
# multiprocessing.connection's other public names, its own objects: the
# exceptions (so that `except` clauses match either module's), the handshake
# (it works on any connection: the running Python's, so 3.12's digest
# negotiation and deliver_challenge(digest_name=) come with it), the address
# helpers and constants
from multiprocessing.connection import (AuthenticationError, BufferTooShort, BUFSIZE,
                                        CONNECTION_TIMEOUT, ConnectionWrapper, MESSAGE_LENGTH,
                                        address_type, answer_challenge, arbitrary_address,
                                        default_family, deliver_challenge, families)

if sys.version_info < (3, 12):
    # public up to 3.11; 3.12 made them private (_CHALLENGE, ...) with its new handshake
    from multiprocessing.connection import CHALLENGE, FAILURE, WELCOME

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


class SocketListener(_mpc.SocketListener):
    """multiprocessing's bound, listening socket (it unlinks a unix socket's
    file on close or at exit); accept() hands out cproc Connections."""

    def accept(self):
        s, self._last_accepted = self._socket.accept()
        s.setblocking(True)
        return Connection(s.detach())


_SocketListener = SocketListener


def SocketClient(address):
    '''
    Return a connection object connected to the socket given by `address`
    '''
    family = address_type(address)
    with socket.socket(getattr(socket, family)) as s:
        s.setblocking(True)
        s.connect(address)
        return Connection(s.detach())


def _check_authkey(authkey, conn):
    if authkey is not None and not isinstance(authkey, bytes):
        conn.close()
        raise TypeError('authkey should be a byte string')


def _authenticate(conn, authkey, server):
    try:
        if server:
            deliver_challenge(conn, authkey)
            answer_challenge(conn, authkey)
        else:
            answer_challenge(conn, authkey)
            deliver_challenge(conn, authkey)
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
        family = family or (address and address_type(address)) \
                 or default_family
        address = address or arbitrary_address(family)
        _mpc._validate_family(family)       # 'AF_PIPE' is Windows only
        self._listener = SocketListener(address, family, backlog)
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
    family = family or address_type(address)
    _mpc._validate_family(family)       # only validated, as multiprocessing does
    c = SocketClient(address)
    _check_authkey(authkey, c)
    if authkey is not None:
        _authenticate(c, authkey, server=False)
    return c


# multiprocessing's wait() registers each object with a selector; these are
# the selector's checks and messages (selectors._fileobj_to_fd and register)


def _fileobj_to_fd(fileobj):
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError("Invalid file object: "
                             "{!r}".format(fileobj)) from None
    if fd < 0:
        raise ValueError("Invalid file descriptor: {}".format(fd))
    return fd


def wait(object_list, timeout=None):
    """Wait till an object in object_list is ready/readable.

    Returns list of those objects in object_list which are ready/readable.
    """
    by_fd = {}
    for obj in object_list:
        try:
            fd = _fileobj_to_fd(obj)
        except ValueError:
            # as a selector: an object already registered whose fileno() now fails
            for fd, registered in by_fd.items():
                if registered is obj:
                    break
            else:
                raise
        if fd in by_fd:
            raise KeyError("{!r} (FD {}) is already registered".format(obj, fd))
        by_fd[fd] = obj
    # no objects: sleeps until the timeout (forever without one; Ctrl+C interrupts)
    return [by_fd[fd] for fd in _cproc.wait_fds(list(by_fd), timeout)]


# --------------------------------------------------------------------------
# XML-RPC framed connections, as multiprocessing's (on cproc Connections)


class XmlListener(Listener):
    def accept(self):
        global xmlrpclib
        import xmlrpc.client as xmlrpclib
        obj = Listener.accept(self)
        return ConnectionWrapper(obj, _xml_dumps, _xml_loads)


def XmlClient(*args, **kwds):
    global xmlrpclib
    import xmlrpc.client as xmlrpclib
    return ConnectionWrapper(Client(*args, **kwds), _xml_dumps, _xml_loads)


def _xml_dumps(obj):
    return xmlrpclib.dumps((obj,), None, None, None, 1).encode('utf-8')


def _xml_loads(s):
    (obj,), method = xmlrpclib.loads(s.decode('utf-8'))
    return obj


# --------------------------------------------------------------------------
# pickling: the fd is duplicated to the receiving process, as multiprocessing's


def reduce_connection(conn):
    df = _mp_reduction.DupFd(conn.fileno())
    return rebuild_connection, (df, conn.readable, conn.writable)


def rebuild_connection(df, readable, writable):
    return Connection(df.detach(), readable, writable)


_reduce_connection = reduce_connection
_rebuild_connection = rebuild_connection    # the name pickles made by earlier versions refer to

_mp_reduction.register(Connection, reduce_connection)
