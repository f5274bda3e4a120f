"""Queue, JoinableQueue and SimpleQueue, as multiprocessing.queues.

The classes are C types (csrc/queue.c on csrc/channel.c): a ring of records in shared memory,
objects pickled in the caller, no feeder thread. This module holds the Python
half of pickling for them: the general pickler (multiprocessing's reducers,
protocol 5 with out-of-band buffers) used for anything that is not plain data.
"""

import io
import os
import pickle
import select
import sys
import time
import weakref
from queue import Empty, Full  # as multiprocessing.queues: the exceptions get() and put() raise

from ._cproc import Queue, JoinableQueue, SimpleQueue
from .reduction import ForkingPickler

__all__ = ["Queue", "SimpleQueue", "JoinableQueue"]


def _rebuild_memoryview(buffer, fmt, shape):
    view = memoryview(buffer)
    try:
        return view.cast("B").cast(fmt, shape)
    except (TypeError, ValueError):  # a format cast() cannot express: bytes as they are
        return view


def _is_read_only_array(obj):
    numpy = sys.modules.get("numpy")
    return numpy is not None and type(obj) is numpy.ndarray and not obj.flags.writeable


class _QueuePickler(ForkingPickler):
    """ForkingPickler that also sends memoryviews, by out-of-band buffer."""

    def reducer_override(self, obj):
        if type(obj) is memoryview:
            data = pickle.PickleBuffer(obj) if obj.contiguous else obj.tobytes()
            return _rebuild_memoryview, (data, obj.format, obj.shape)
        if _is_read_only_array(obj):
            # Out of band it would arrive read-only (pickle marks the buffer
            # so); multiprocessing pickles it in band and the receiver gets
            # a writable copy: do the same.
            return obj.__reduce_ex__(4)
        return super().reducer_override(obj)


def _dumps(obj):
    """(pickle stream, out-of-band buffers) of obj; called by put() from C."""
    buffers = []
    stream = io.BytesIO()
    _QueuePickler(stream, pickle.HIGHEST_PROTOCOL, True, buffers.append).dump(obj)
    return stream.getvalue(), buffers


class _QueueReader:
    """SimpleQueue._reader: the read end of a queue, as multiprocessing's
    SimpleQueue has it (a Connection), for code that waits on it with
    multiprocessing.connection.wait() — concurrent.futures.ProcessPoolExecutor.

    Its fileno() is a pipe that is readable exactly while the queue holds an
    item (csrc/channel.c, "the watcher's pipe"; models/watch.pml): the queue
    writes a byte to it when a put makes it non-empty and drains it when a
    get in this process empties it, both under the queue's lock. recv() is
    the queue's get(). (A get in another process cannot drain it: recv() then
    waits for the next item, as on a multiprocessing pipe another process
    read from.)
    """

    def __init__(self, queue, closed=False):
        self._queue = weakref.ref(queue)   # the queue holds its reader: no cycle
        if closed:                         # the reader of a closed queue: closed
            self._rfd = self._wfd = None
            return
        self._rfd, self._wfd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            queue._watch(self._wfd, self._rfd)
        except BaseException:
            self._close_fds()
            raise

    def _check_open(self):
        if self._rfd is None:
            raise OSError("handle is closed")
        queue = self._queue()
        if queue is None:
            raise OSError("handle is closed")
        return queue

    @property
    def closed(self):
        """True if the connection is closed"""
        return self._rfd is None

    @property
    def readable(self):
        """True if the connection is readable"""
        return True

    @property
    def writable(self):
        """True if the connection is writable"""
        return False

    def fileno(self):
        """File descriptor or handle of the connection"""
        self._check_open()
        return self._rfd

    def recv(self):
        """Receive a (picklable) object"""
        return self._check_open().get()

    def poll(self, timeout=0.0):
        """Whether there is any input available to be read"""
        queue = self._check_open()
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while queue.empty():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            queue._watch_sync()        # a byte another process's get left: drained
            select.select([self._rfd], [], [], left)
        return True

    def _close_fds(self):
        for fd in (self._rfd, self._wfd):
            if fd is not None:
                os.close(fd)
        self._rfd = self._wfd = None

    def close(self):
        """Close the connection"""
        if self._rfd is None:
            return
        queue = self._queue()
        try:
            if queue is not None:
                queue._unwatch()
        finally:
            self._close_fds()

    def __del__(self):
        if getattr(self, "_rfd", None) is not None:
            self._close_fds()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()


class _QueueWriter:
    """SimpleQueue._writer: multiprocessing's is the pipe's write end; here
    only whether the queue was closed (put() is how one writes)."""

    def __init__(self, queue, closed):
        self.closed = closed

    readable = False
    writable = True
