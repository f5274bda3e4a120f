"""Pickling for cproc: multiprocessing's ForkingPickler, plus cproc's own objects.

cproc's shared ctypes objects (RawValue, RawArray, the objects inside Value and
Array) pickle to a handle through an instance-level __reduce_ex__. Once a
program has created a multiprocessing Value of the same ctypes type,
multiprocessing's ForkingPickler has a class-wide reducer for that type which
would win; reducer_override (consulted first) keeps cproc's handle.
"""

import collections
import io
import pickle
import sys

from multiprocessing.reduction import ForkingPickler as _MPForkingPickler

__all__ = ["ForkingPickler", "dump", "dumps", "dumps_any"]

# ctypes' base classes, looked up once ctypes is loaded: importing it here
# would cost every process that imports cproc (every spawned child) ~2 ms,
# and no ctypes object can exist before ctypes is imported.
_CTYPES = ()


def _ctypes_classes():
    global _CTYPES
    ctypes = sys.modules.get("ctypes")
    if ctypes is not None:
        _CTYPES = (ctypes._SimpleCData, ctypes.Array, ctypes.Structure, ctypes.Union)
    return _CTYPES


class ForkingPickler(_MPForkingPickler):
    def reducer_override(self, obj):
        if isinstance(obj, _CTYPES or _ctypes_classes()):
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


# ---- any callable: cloudpickle when plain pickle refuses ------------------
#
# Pool tasks and the process objects of spawn and forkserver children go
# through dumps_any: plain pickle first (fast, and what multiprocessing does),
# cloudpickle only for what plain pickle refuses — lambdas, closures,
# functions and classes defined in __main__ or a notebook cell under spawn.

_PICKLE_REFUSALS = (pickle.PicklingError, AttributeError, TypeError)
_cloud_pickler = None


def _cloud_pickler_class():
    global _cloud_pickler
    if _cloud_pickler is None:
        import cloudpickle

        class CloudForkingPickler(cloudpickle.Pickler):
            """cloudpickle with ForkingPickler's reducers and cproc's handles."""

            def __init__(self, file, protocol=None, buffer_callback=None):
                super().__init__(file, protocol, buffer_callback=buffer_callback)
                self.dispatch_table = collections.ChainMap(
                    _MPForkingPickler._extra_reducers, cloudpickle.Pickler.dispatch_table)

            def reducer_override(self, obj):
                reduced = ForkingPickler.reducer_override(self, obj)
                if reduced is NotImplemented:
                    return super().reducer_override(obj)
                return reduced

        _cloud_pickler = CloudForkingPickler
    return _cloud_pickler


def dumps_any(obj, protocol=None, buffer_callback=None, by_value=False):
    """The pickle of obj as bytes: ForkingPickler, or cloudpickle when it refuses.

    When cloudpickle fails too, the plain pickler's error is raised: it is
    the one multiprocessing users know. by_value: cloudpickle first, for a
    receiver that cannot import __main__ (spawn and forkserver children of a
    notebook, ``python -c`` or a program read from stdin), where plain pickle
    would succeed by name and the receiver then fail to find the name."""
    if by_value:
        buf = io.BytesIO()
        try:
            _cloud_pickler_class()(buf, protocol, buffer_callback=buffer_callback).dump(obj)
            return buf.getvalue()
        except Exception:
            pass
    buf = io.BytesIO()
    try:
        ForkingPickler(buf, protocol, True, buffer_callback).dump(obj)
    except _PICKLE_REFUSALS as plain_error:
        buf = io.BytesIO()
        try:
            _cloud_pickler_class()(buf, protocol, buffer_callback=buffer_callback).dump(obj)
        except Exception:
            raise plain_error from None
    return buf.getvalue()
