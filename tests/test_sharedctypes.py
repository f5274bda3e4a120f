"""Value, Array, RawValue, RawArray and the sharedctypes module.

Differential: each test runs against multiprocessing (fork context) and cproc
(fixture ``mp``) and asserts what multiprocessing 3.11 does.
"""

import ctypes
import math
import re
import weakref

import pytest

from helpers.blocking import wait_blocked, wait_until
from helpers.children import FORK, ChildSet, Point, SharedInts, ThreadTask

pytestmark = pytest.mark.timeout(30)

TYPECODES = {
    # typecode: (ctypes type, default value, sample values)
    "c": (ctypes.c_char, b"\x00", [b"x", b"\xff"]),
    "u": (ctypes.c_wchar, "\x00", ["é", "\U0001f600"]),
    "b": (ctypes.c_byte, 0, [-128, 127]),
    "B": (ctypes.c_ubyte, 0, [0, 255]),
    "h": (ctypes.c_short, 0, [-(2**15), 2**15 - 1]),
    "H": (ctypes.c_ushort, 0, [2**16 - 1]),
    "i": (ctypes.c_int, 0, [-(2**31), 2**31 - 1]),
    "I": (ctypes.c_uint, 0, [2**32 - 1]),
    "l": (ctypes.c_long, 0, [-(2**63), 2**63 - 1]),
    "L": (ctypes.c_ulong, 0, [2**64 - 1]),
    "q": (ctypes.c_longlong, 0, [-(2**63), 2**63 - 1]),
    "Q": (ctypes.c_ulonglong, 0, [2**64 - 1]),
    "f": (ctypes.c_float, 0.0, [1.5, -0.25]),
    "d": (ctypes.c_double, 0.0, [1 / 3, -1e300]),
}
ALL_TYPECODES = list(TYPECODES)
NUMERIC_TYPECODES = [tc for tc in TYPECODES if tc not in "cu"]


def _seq(tc, values):
    """What slicing an array of typecode tc returns for these items."""
    if tc == "c":
        return b"".join(values)
    if tc == "u":
        return "".join(values)
    return list(values)


# ==========================================================================
# Value


@pytest.mark.parametrize("tc", ALL_TYPECODES)
def test_value_typecodes(mp, tc):
    ctype, default, samples = TYPECODES[tc]
    v = mp.Value(tc)
    assert v.value == default
    assert type(v.value) is type(default)
    for sample in samples:
        v.value = sample
        assert v.value == sample
    v2 = mp.Value(tc, samples[0])
    assert v2.value == samples[0]
    assert repr(v2) == f"<Synchronized wrapper for {ctype(samples[0])!r}>"
    assert isinstance(v2, mp.sharedctypes.Synchronized)
    assert isinstance(v2.get_obj(), ctype)


def test_value_repr(mp):
    assert repr(mp.Value("i", 3)) == "<Synchronized wrapper for c_int(3)>"
    assert repr(mp.Value("d", 2.5)) == "<Synchronized wrapper for c_double(2.5)>"
    assert repr(mp.Value("c", b"a")) == "<Synchronized wrapper for c_char(b'a')>"


def test_value_float_rounding_and_nan(mp):
    v = mp.Value("f", 0.1)
    assert v.value == ctypes.c_float(0.1).value != 0.1
    d = mp.Value("d", float("nan"))
    assert math.isnan(d.value)
    d.value = float("inf")
    assert d.value == float("inf")


def test_value_integer_wraparound_like_ctypes(mp):
    assert mp.Value("b", 200).value == -56
    assert mp.Value("B", -1).value == 255
    v = mp.Value("i", 2**32 + 5)
    assert v.value == 5
    v.value = 2**31
    assert v.value == -(2**31)


def test_value_char_accepts_int(mp):
    assert mp.Value("c", 65).value == b"A"


@pytest.mark.parametrize(
    "ctype, value",
    [
        (ctypes.c_bool, True),
        (ctypes.c_int8, -3),
        (ctypes.c_uint64, 2**64 - 1),
        (ctypes.c_double, 2.5),
        (ctypes.c_char, b"z"),
        (ctypes.c_size_t, 12345),
    ],
)
def test_value_ctypes_types(mp, ctype, value):
    v = mp.Value(ctype, value)
    assert v.value == value
    assert type(v.value) is type(value)
    assert isinstance(v.get_obj(), ctype)
    assert repr(v) == f"<Synchronized wrapper for {ctype(value)!r}>"
    raw = mp.RawValue(ctype, value)
    assert type(raw) is ctype
    assert raw.value == value


def test_value_bool(mp):
    v = mp.Value(ctypes.c_bool)
    assert v.value is False
    v.value = True
    assert v.value is True
    v.value = 0
    assert v.value is False


def test_value_bad_arguments(mp):
    with pytest.raises(TypeError):
        mp.Value("z")
    with pytest.raises(TypeError):
        mp.Value("i", "x")
    with pytest.raises(TypeError):
        mp.Value("d", "x")
    with pytest.raises(TypeError):
        mp.Value("c", "x")  # c_char wants bytes
    with pytest.raises(TypeError):
        mp.Value("i", 1, 2)
    v = mp.Value("i", 1)
    with pytest.raises(TypeError):
        v.value = "x"
    with pytest.raises(TypeError):
        v.value = 1.5
    assert v.value == 1


def test_value_get_lock_is_rlock_by_default(mp):
    v = mp.Value("i", 0)
    lock = v.get_lock()
    assert isinstance(lock, mp.synchronize.RLock)
    assert v.get_lock() is lock
    with v.get_lock():
        v.value += 1  # the RLock is re-taken by .value: no deadlock
        with v:  # the wrapper is itself a context manager on the same lock
            v.value += 1
    assert v.value == 2
    assert v.acquire() is True
    v.release()


def test_value_lock_variants(mp):
    raw = mp.Value("i", 7, lock=False)
    assert type(raw) is ctypes.c_int
    assert raw.value == 7
    sync = mp.Value("i", 7, lock=True)
    assert isinstance(sync, mp.sharedctypes.Synchronized)
    lock = mp.Lock()
    v = mp.Value("i", 7, lock=lock)
    assert v.get_lock() is lock
    with lock:
        assert lock.acquire(False) is False
    rlock = mp.RLock()
    v = mp.Value("d", lock=rlock)
    assert v.get_lock() is rlock


def test_value_bad_lock(mp):
    with pytest.raises(AttributeError) as ei:
        mp.Value("i", 3, lock=5)
    assert str(ei.value) == "5 has no method 'acquire'"


def test_value_get_obj_shares_memory(mp):
    v = mp.Value("i", 1)
    obj = v.get_obj()
    obj.value = 9
    assert v.value == 9
    v.value = 11
    assert obj.value == 11


def test_value_structure(mp):
    v = mp.Value(Point, 1, 2.5)
    assert (v.x, v.y) == (1, 2.5)
    v.x = 5
    v.y = -1.0
    assert (v.x, v.y) == (5, -1.0)
    assert isinstance(v.get_obj(), Point)
    assert v.get_obj().x == 5
    assert type(v).__name__ == "SynchronizedPoint"
    assert re.fullmatch(r"<SynchronizedPoint wrapper for <[\w.]*Point object at 0x[0-9a-f]+>>", repr(v)), repr(v)
    with v.get_lock():
        v.x += 1
    assert v.x == 6
    zero = mp.Value(Point)
    assert (zero.x, zero.y) == (0, 0.0)


def test_raw_value(mp):
    rv = mp.RawValue("d")
    assert type(rv) is ctypes.c_double
    assert rv.value == 0.0
    rv.value = 1.25
    assert rv.value == 1.25
    assert type(mp.RawValue("i", 5)) is ctypes.c_int
    assert mp.RawValue("i", 5).value == 5
    p = mp.RawValue(Point, 3, 4.0)
    assert type(p) is Point
    assert (p.x, p.y) == (3, 4.0)
    with pytest.raises(TypeError):
        mp.RawValue("z")


# ==========================================================================
# Array


@pytest.mark.parametrize("tc", ALL_TYPECODES)
def test_array_typecodes(mp, tc):
    ctype, default, samples = TYPECODES[tc]
    a = mp.Array(tc, 4)
    assert len(a) == 4
    assert a[:] == _seq(tc, [default] * 4)
    a[1] = samples[0]
    assert a[1] == samples[0]
    b = mp.Array(tc, samples)
    assert len(b) == len(samples)
    assert b[:] == _seq(tc, samples)
    assert list(b) == list(samples)
    assert b.get_obj()._type_ is ctype
    raw = mp.RawArray(tc, samples)
    assert isinstance(raw, ctypes.Array)
    assert raw._type_ is ctype
    assert raw[:] == _seq(tc, samples)


def test_array_wrapper_types_and_repr(mp):
    sc = mp.sharedctypes
    a = mp.Array("i", 3)
    assert type(a) is sc.SynchronizedArray
    assert re.fullmatch(r"<SynchronizedArray wrapper for <[\w.]*c_int_Array_3 object at 0x[0-9a-f]+>>", repr(a)), repr(a)
    s = mp.Array("c", b"hi")
    assert type(s) is sc.SynchronizedString
    assert re.fullmatch(r"<SynchronizedString wrapper for <[\w.]*c_char_Array_2 object at 0x[0-9a-f]+>>", repr(s)), repr(s)
    u = mp.Array("u", "hi")
    assert type(u) is sc.SynchronizedArray  # only 'c' arrays get .value/.raw
    assert not hasattr(u, "value")


def test_array_indexing(mp):
    a = mp.Array("i", [10, 20, 30, 40])
    assert a[0] == 10
    assert a[-1] == 40
    assert a[-4] == 10
    a[-2] = 33
    assert a[2] == 33
    for bad in (4, -5, 100):
        with pytest.raises(IndexError) as ei:
            a[bad]
        assert str(ei.value) == "invalid index"
        with pytest.raises(IndexError):
            a[bad] = 1
    with pytest.raises(TypeError):
        a[1.5]
    with pytest.raises(TypeError):
        a["x"]
    with pytest.raises(TypeError):
        a[0] = "x"
    assert a[:] == [10, 20, 33, 40]


def test_array_slicing(mp):
    a = mp.Array("i", range(10))
    assert a[2:5] == [2, 3, 4]
    assert a[::2] == [0, 2, 4, 6, 8]
    assert a[::-1] == list(range(9, -1, -1))
    assert a[-3:] == [7, 8, 9]
    assert a[5:2] == []
    assert a[-100:100] == list(range(10))
    a[2:5] = [20, 30, 40]
    assert a[:] == [0, 1, 20, 30, 40, 5, 6, 7, 8, 9]
    a[::3] = [-1, -2, -3, -4]
    assert a[:] == [-1, 1, 20, -2, 40, 5, -3, 7, 8, -4]
    a[::-5] = [100, 200]
    assert a[9] == 100 and a[4] == 200
    a[:] = range(10)
    assert a[:] == list(range(10))
    with pytest.raises(ValueError) as ei:
        a[0:2] = [1]
    assert str(ei.value) == "Can only assign sequence of same size"
    with pytest.raises(ValueError):
        a[::2] = [1, 2]
    assert a[:] == list(range(10))


def test_array_iteration_and_len(mp):
    a = mp.Array("d", [0.5, 1.5, 2.5])
    assert list(a) == [0.5, 1.5, 2.5]
    assert [x * 2 for x in a] == [1.0, 3.0, 5.0]
    assert len(a) == 3
    assert 1.5 in a
    assert len(mp.Array("i", 0)) == 0
    assert list(mp.Array("i", 0)) == []


def test_array_char(mp):
    s = mp.Array("c", b"hello")
    assert s.value == b"hello"
    assert s.raw == b"hello"
    assert s[:] == b"hello"
    assert s[1] == b"e"
    assert len(s) == 5
    s.value = b"hi"
    assert s.value == b"hi"
    assert s.raw == b"hi\x00lo"
    s.raw = b"HELLO"
    assert s.value == b"HELLO"
    s[0] = b"J"
    assert s.value == b"JELLO"
    with pytest.raises(ValueError) as ei:
        s.value = b"much too long"
    assert str(ei.value) == "byte string too long"
    empty = mp.Array("c", 4)
    assert empty.raw == b"\x00" * 4
    assert empty.value == b""


def test_array_wchar(mp):
    u = mp.Array("u", "héllo")
    assert u[:] == "héllo"
    assert u[1] == "é"
    u[0] = "j"
    assert u.get_obj().value == "jéllo"
    assert len(u) == 5


def test_array_ctypes_types(mp):
    a = mp.Array(ctypes.c_int16, [1, -2, 3])
    assert a[:] == [1, -2, 3]
    assert a.get_obj()._type_ is ctypes.c_int16
    b = mp.Array(ctypes.c_bool, [True, False])
    assert b[:] == [True, False]
    d = mp.Array(ctypes.c_double, 3)
    assert d[:] == [0.0, 0.0, 0.0]


def test_array_of_structures(mp):
    a = mp.Array(Point, [(1, 2.0), (3, 4.0)])
    assert (a[1].x, a[1].y) == (3, 4.0)
    a[0] = Point(7, 8.5)
    assert (a[0].x, a[0].y) == (7, 8.5)
    a[0].x = 9  # the item is a view of the shared memory
    assert a[0].x == 9


def test_array_bad_arguments(mp):
    with pytest.raises(ValueError) as ei:
        mp.Array("i", -1)
    assert str(ei.value) == "Array length must be >= 0, not -1"
    with pytest.raises(ValueError) as ei:
        mp.RawArray("i", -1)
    assert str(ei.value) == "Array length must be >= 0, not -1"
    with pytest.raises(TypeError):
        mp.Array("z", 3)
    with pytest.raises(TypeError):
        mp.Array("i", ["a"])
    with pytest.raises(TypeError):
        mp.Array("i", 2.5)


def test_array_lock_variants(mp):
    raw = mp.Array("i", [1, 2], lock=False)
    assert isinstance(raw, ctypes.Array)
    assert raw._type_ is ctypes.c_int
    assert raw[:] == [1, 2]
    sync = mp.Array("i", 2, lock=True)
    assert isinstance(sync.get_lock(), mp.synchronize.RLock)
    lock = mp.Lock()
    a = mp.Array("i", 2, lock=lock)
    assert a.get_lock() is lock
    a[0] = 5  # item access takes and releases the (non-recursive) lock
    assert a[:] == [5, 0]
    assert lock.acquire(False) is True
    lock.release()
    rlock = mp.RLock()
    r = mp.Array("d", 2, lock=rlock)
    assert r.get_lock() is rlock
    with r.get_lock():
        r[0] = 5.0
    with r:
        r[1] = 6.0
    assert r[:] == [5.0, 6.0]
    with pytest.raises(AttributeError) as ei:
        mp.Array("i", 3, lock=5)
    assert str(ei.value) == "5 has no method 'acquire'"


def test_raw_array(mp):
    r = mp.RawArray("i", 3)
    assert isinstance(r, ctypes.Array)
    assert r._type_ is ctypes.c_int
    assert len(r) == 3
    assert r[:] == [0, 0, 0]
    r2 = mp.RawArray("d", [1.0, 2.0])
    assert r2[:] == [1.0, 2.0]
    c = mp.RawArray("c", b"ab")
    assert c.value == b"ab"
    assert c.raw == b"ab"
    s = mp.RawArray(Point, 2)
    assert s[1].x == 0


# ==========================================================================
# buffer protocol / numpy


def test_memoryview_of_array(mp):
    a = mp.Array("i", [1, 2, 3])
    mv = memoryview(a.get_obj())
    ref = memoryview((ctypes.c_int * 3)())
    assert (mv.format, mv.itemsize, mv.shape, mv.nbytes) == (ref.format, ref.itemsize, ref.shape, ref.nbytes)
    assert mv.readonly is False
    assert bytes(mv) == bytes(memoryview((ctypes.c_int * 3)(1, 2, 3)))
    alias = (ctypes.c_int * 3).from_buffer(mv)  # through the buffer protocol
    alias[1] = 20
    assert a[1] == 20
    a[2] = 30
    assert alias[2] == 30
    assert bytes(mv) == bytes(memoryview((ctypes.c_int * 3)(1, 20, 30)))
    del alias, mv


def test_numpy_frombuffer_is_zero_copy(mp):
    np = pytest.importorskip("numpy")
    a = mp.Array("d", 1000)
    view = np.frombuffer(a.get_obj(), dtype=np.float64)
    assert view.shape == (1000,)
    assert view.ctypes.data == ctypes.addressof(a.get_obj())
    view[:] = np.arange(1000)
    assert a[999] == 999.0
    assert a[:5] == [0.0, 1.0, 2.0, 3.0, 4.0]
    a[0] = -1.0
    assert view[0] == -1.0
    del view


def test_numpy_raw_array_and_value(mp):
    np = pytest.importorskip("numpy")
    r = mp.RawArray("i", 10)
    view = np.frombuffer(r, dtype=np.int32)
    view += 7
    assert r[:] == [7] * 10
    assert view.ctypes.data == ctypes.addressof(r)
    big = mp.Array("b", 1 << 21)
    bview = np.frombuffer(big.get_obj(), dtype=np.int8)
    bview[-1] = 5
    assert big[(1 << 21) - 1] == 5
    del view, bview


def test_numpy_sees_other_process_writes(mp):
    np = pytest.importorskip("numpy")
    a = mp.Array("d", 100)
    view = np.frombuffer(a.get_obj(), dtype=np.float64)

    def writer():
        a[:] = [float(i) for i in range(100)]
        return True

    with ChildSet() as cs:
        assert cs.start(writer).result() is True
    assert view.sum() == sum(range(100))
    del view


# ==========================================================================
# sharedctypes helpers


def test_weak_references(mp):
    """Value and Array take weak references, as multiprocessing's (Python) objects do."""
    for make in (lambda: mp.Value("i", 1), lambda: mp.Array("d", 3), lambda: mp.Array("c", b"ab"),
                 lambda: mp.Value("i", lock=False)):
        obj = make()
        ref = weakref.ref(obj)
        assert ref() is obj
        del obj
        assert ref() is None


def test_sharedctypes_copy(mp):
    sc = mp.sharedctypes
    rv = mp.RawValue("i", 5)
    cp = sc.copy(rv)
    assert type(cp) is ctypes.c_int
    assert cp.value == 5
    cp.value = 6
    assert rv.value == 5
    ra = mp.RawArray("d", [1.0, 2.0])
    ca = sc.copy(ra)
    assert ca[:] == [1.0, 2.0]
    ca[0] = 9.0
    assert ra[0] == 1.0


def test_sharedctypes_synchronized(mp):
    sc = mp.sharedctypes
    rv = mp.RawValue("i", 5)
    s = sc.synchronized(rv)
    assert type(s) is sc.Synchronized
    assert s.value == 5
    s.value = 8
    assert rv.value == 8
    assert isinstance(s.get_lock(), mp.synchronize.RLock)
    lock = mp.Lock()
    assert sc.synchronized(mp.RawValue("i"), lock).get_lock() is lock
    sa = sc.synchronized(mp.RawArray("i", 3))
    assert type(sa) is sc.SynchronizedArray
    assert sa[:] == [0, 0, 0]
    ss = sc.synchronized(mp.RawArray("c", b"ab"))
    assert type(ss) is sc.SynchronizedString
    assert ss.value == b"ab"


# ==========================================================================
# across processes


def test_values_written_by_child_are_seen_by_parent(mp):
    v = mp.Value("i", 0)
    d = mp.Value("d", 0.0)
    a = mp.Array("i", 5)
    s = mp.Array("c", 8)
    rv = mp.RawValue("q", 0)
    ra = mp.RawArray("d", 3)
    p = mp.Value(Point)

    def writer():
        v.value = 42
        d.value = 2.5
        a[:] = [1, 2, 3, 4, 5]
        s.value = b"child"
        rv.value = 2**40
        ra[1] = -0.5
        p.x, p.y = 3, 4.5
        return True

    with ChildSet() as cs:
        assert cs.start(writer).result() is True
    assert v.value == 42
    assert d.value == 2.5
    assert a[:] == [1, 2, 3, 4, 5]
    assert s.value == b"child"
    assert rv.value == 2**40
    assert ra[:] == [0.0, -0.5, 0.0]
    assert (p.x, p.y) == (3, 4.5)


def test_parent_writes_seen_by_running_child(mp):
    v = mp.Value("i", 0)
    a = mp.Array("d", 4)
    go = FORK.Event()

    def reader():
        go.wait(10)
        return v.value, a[:]

    with ChildSet() as cs:
        child = cs.start(reader)  # forked before the writes below
        v.value = 17
        a[:] = [0.5, 1.5, 2.5, 3.5]
        go.set()
        assert child.result() == (17, [0.5, 1.5, 2.5, 3.5])


def test_access_waits_for_lock_held_by_other_process(mp):
    """.value, items and slices are read under the wrapper's lock."""
    v = mp.Value("i", 1)
    a = mp.Array("i", [1, 1])
    held, go = FORK.Event(), FORK.Event()

    def update():
        with v.get_lock(), a.get_lock():
            held.set()
            go.wait(10)
            v.value = 2
            a[:] = [2, 2]
        return True

    with ChildSet() as cs:
        child = cs.start(update)
        assert held.wait(10)
        readers = [ThreadTask(lambda: v.value), ThreadTask(lambda: a[:]), ThreadTask(lambda: a[0])]
        wait_blocked(*readers)  # on the lock
        assert all(r.is_alive() for r in readers)
        go.set()
        assert [r.result(5) for r in readers] == [2, [2, 2], 2]
        assert child.result() is True


def test_value_get_lock_excludes_other_process(mp):
    v = mp.Value("i", 0)
    with v.get_lock():
        with ChildSet() as cs:
            child = cs.start(lambda: v.get_lock().acquire(timeout=0.2))
            assert child.result() is False


def test_value_increments_under_lock_across_processes(mp):
    v = mp.Value("i", 0)

    def work():
        for _ in range(2000):
            with v.get_lock():
                v.value += 1
        return True

    with ChildSet() as cs:
        children = [cs.start(work) for _ in range(4)]
        assert [c.result(30) for c in children] == [True] * 4
    assert v.value == 8000


def test_array_increments_under_lock_across_processes(mp):
    a = mp.Array("i", 3)

    def work():
        for _ in range(1000):
            with a.get_lock():
                a[0] += 1
                a[2] = a[0] * 2
        return True

    with ChildSet() as cs:
        children = [cs.start(work) for _ in range(4)]
        assert [c.result(30) for c in children] == [True] * 4
    assert a[:] == [4000, 0, 8000]


def test_child_sees_writes_while_running(mp):
    v = mp.Value("i", 0)
    seen = SharedInts(1)

    def watcher():
        seen[0] = 1  # watching from now on
        ok = wait_until(lambda: v.value == 99, 10)
        seen[0] = 2
        return bool(ok)

    with ChildSet() as cs:
        child = cs.start(watcher)
        assert wait_until(lambda: seen[0] == 1, 10)
        assert not child.reported()
        v.value = 99
        assert child.result(10) is True
    assert seen[0] == 2
