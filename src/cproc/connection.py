"""cproc.connection: waiting on several objects at once.

wait() takes Process sentinels (pidfds), raw fds and any object with a
fileno() method; the waiting is done in C (csrc/connection.c). Connection,
Pipe, Listener and Client arrive with the Queue/Pipe issue.
"""

from . import _cproc

__all__ = ["wait"]


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
