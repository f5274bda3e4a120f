"""Pickling for cproc: multiprocessing's ForkingPickler, plus cproc's own objects.

cproc's shared ctypes objects (RawValue, RawArray, the objects inside Value and
Array) pickle to a handle through an instance-level __reduce_ex__. Once a
program has created a multiprocessing Value of the same ctypes type,
multiprocessing's ForkingPickler has a class-wide reducer for that type which
would win; reducer_override (consulted first) keeps cproc's handle.
"""

import ctypes
import io
import pickle

from multiprocessing.reduction import ForkingPickler as _MPForkingPickler

__all__ = ["ForkingPickler", "dump", "dumps"]

_CTYPES = (ctypes._SimpleCData, ctypes.Array, ctypes.Structure, ctypes.Union)


class ForkingPickler(_MPForkingPickler):
    def reducer_override(self, obj):
        if isinstance(obj, _CTYPES):
            reduce = vars(obj).get("__reduce_ex__")
            if reduce is not None:
                return reduce(pickle.HIGHEST_PROTOCOL)
        return NotImplemented


def dump(obj, file, protocol=None):
    """Replacement for pickle.dump() using ForkingPickler."""
    ForkingPickler(file, protocol).dump(obj)


def dumps(obj, protocol=None):
    buf = io.BytesIO()
    ForkingPickler(buf, protocol).dump(obj)
    return buf.getbuffer()
