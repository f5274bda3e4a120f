"""Queue, JoinableQueue and SimpleQueue, as multiprocessing.queues.

The classes are C types (csrc/queue.c): a ring of records in shared memory,
objects pickled in the caller, no feeder thread. This module holds the Python
half of pickling for them: the general pickler (multiprocessing's reducers,
protocol 5 with out-of-band buffers) used for anything that is not plain data.
"""

import io
import pickle
import sys
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
