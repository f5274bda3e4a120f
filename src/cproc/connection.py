"""cproc.connection: Connection, Pipe and wait().

Connection is a C type (csrc/connection.c) whose framing is byte-compatible
with multiprocessing.connection, so either module can sit at either end of a
pipe or socket. A Connection pickles as multiprocessing's do: its fd is handed
to a starting spawn/forkserver child, or to a running process through
multiprocessing's resource sharer (SCM_RIGHTS over a unix socket).
Listener and Client arrive with the rest of the Queue/Pipe issue.
"""

import os
import socket

from multiprocessing import reduction as _mp_reduction

from . import _cproc

__all__ = ["Connection", "Pipe", "wait"]

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
