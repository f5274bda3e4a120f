"""Value, Array, RawValue and RawArray: ctypes objects in shared memory.

RawValue/RawArray return plain ctypes objects whose memory is a cproc shared
block; they pickle to a handle (an instance-level __reduce_ex__), so they can
be sent to processes that did not inherit them. Value/Array wrap them with a
lock in the C types Synchronized, SynchronizedArray and SynchronizedString,
whose .value and item access run in C.
"""

import ctypes
import functools

from . import _cproc

__all__ = ["RawValue", "RawArray", "Value", "Array", "copy", "synchronized",
           "Synchronized", "SynchronizedArray", "SynchronizedString", "SynchronizedBase"]

typecode_to_type = {
    "c": ctypes.c_char, "u": ctypes.c_wchar,
    "b": ctypes.c_byte, "B": ctypes.c_ubyte,
    "h": ctypes.c_short, "H": ctypes.c_ushort,
    "i": ctypes.c_int, "I": ctypes.c_uint,
    "l": ctypes.c_long, "L": ctypes.c_ulong,
    "q": ctypes.c_longlong, "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float, "d": ctypes.c_double,
}

SynchronizedBase = _cproc.SynchronizedBase
Synchronized = _cproc.Synchronized
SynchronizedArray = _cproc.SynchronizedArray
SynchronizedString = _cproc.SynchronizedString


def _reduce_ctype(type_, block, length, protocol=None):
    return _rebuild_ctype, (type_, block, length)


def _rebuild_ctype(type_, block, length):
    full_type = type_ * length if length is not None else type_
    obj = full_type.from_buffer(block)
    # Looked up on the instance by pickle: this object travels as its handle.
    obj.__reduce_ex__ = functools.partial(_reduce_ctype, type_, block, length)
    return obj


def _new_value(type_, length=None):
    full_type = type_ * length if length is not None else type_
    block = _cproc.SharedBlock(ctypes.sizeof(full_type))   # zero-filled
    return _rebuild_ctype(type_, block, length)


def RawValue(typecode_or_type, *args):
    """Return a ctypes object allocated from shared memory."""
    type_ = typecode_to_type.get(typecode_or_type, typecode_or_type)
    ctypes.sizeof(type_)   # TypeError: this type has no size, as multiprocessing
    obj = _new_value(type_)
    obj.__init__(*args)
    return obj


def RawArray(typecode_or_type, size_or_initializer):
    """Return a ctypes array allocated from shared memory."""
    type_ = typecode_to_type.get(typecode_or_type, typecode_or_type)
    if isinstance(size_or_initializer, int):
        type_ * size_or_initializer   # ValueError for a negative length, as ctypes says it
        return _new_value(type_, size_or_initializer)
    length = len(size_or_initializer)
    result = _new_value(type_, length)
    result.__init__(*size_or_initializer)
    return result


def _check_lock(lock, ctx):
    if lock in (True, None):
        from .synchronize import RLock
        return ctx.RLock() if ctx is not None else RLock()
    if not hasattr(lock, "acquire"):
        raise AttributeError("%r has no method 'acquire'" % lock)
    return lock


def Value(typecode_or_type, *args, lock=True, ctx=None):
    """Return a synchronized shared object."""
    obj = RawValue(typecode_or_type, *args)
    if lock is False:
        return obj
    return synchronized(obj, _check_lock(lock, ctx), ctx=ctx)


def Array(typecode_or_type, size_or_initializer, *, lock=True, ctx=None):
    """Return a synchronized shared array."""
    obj = RawArray(typecode_or_type, size_or_initializer)
    if lock is False:
        return obj
    return synchronized(obj, _check_lock(lock, ctx), ctx=ctx)


def copy(obj):
    """A new shared object holding a copy of ctypes object obj's value."""
    if isinstance(obj, ctypes.Array):
        new_obj = _new_value(obj._type_, len(obj))
    else:
        new_obj = _new_value(type(obj))
    ctypes.pointer(new_obj)[0] = obj
    return new_obj


def _make_property(name):
    def fget(self):
        with self:
            return getattr(self._obj, name)

    def fset(self, value):
        with self:
            setattr(self._obj, name, value)

    return property(fget, fset, doc="field %r, under the lock" % name)


_struct_wrappers = {}


def synchronized(obj, lock=None, ctx=None):
    """Wrap ctypes object `obj` with `lock` (a new RLock when None)."""
    assert not isinstance(obj, SynchronizedBase), "object already synchronized"
    if isinstance(obj, ctypes._SimpleCData):
        return Synchronized(obj, lock, ctx)
    if isinstance(obj, ctypes.Array):
        if obj._type_ is ctypes.c_char:
            return SynchronizedString(obj, lock, ctx)
        return SynchronizedArray(obj, lock, ctx)
    cls = type(obj)
    try:
        scls = _struct_wrappers[cls]
    except KeyError:
        names = [field[0] for field in cls._fields_]
        d = {name: _make_property(name) for name in names}
        d["__module__"] = __name__
        scls = _struct_wrappers[cls] = type("Synchronized" + cls.__name__, (SynchronizedBase,), d)
    return scls(obj, lock, ctx)
