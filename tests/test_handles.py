"""cproc's promises beyond multiprocessing (cproc only).

1. Handles: every object pickles with plain pickle.dumps and works in a
   process that did not inherit it (a running fork child, a spawn child), in
   both directions, with the state shared.
2. Dead holders: a Lock/RLock whose holder was SIGKILLed is handed to a
   waiter within a second, with an OwnerDiedWarning.
5. No leaks: memfd segments, no /dev/shm entries, fds return to their count,
   nothing left after a SIGKILL.
"""

import ctypes
import gc
import os
import pickle
import signal
import threading
import time
import uuid
import warnings

import pytest

from helpers.blocking import proc_state, wait_blocked, wait_until
from helpers.children import Point, Remote, RemoteError, ThreadTask, fork_holder, kill_and_reap
from helpers.resources import fd_links, memfd_mapped_bytes, new_dev_shm_entries
from helpers.scripts import read_line, spawn_script

pytestmark = pytest.mark.timeout(30)


# ==========================================================================
# 1. handles
#
# A scenario gets the object as `obj` here and under the name `n` in the
# remote process, and proves in both directions that they share one state.


def _lock(obj, r, n):
    assert obj.acquire(timeout=5) is True
    assert r.eval(f"{n}.acquire(timeout=0.2)") is False  # held here, seen there
    r.send("eval", f"{n}.acquire(timeout=10)")
    wait_blocked(r, wchan="futex")  # blocked there
    assert not r.pending_reply()
    obj.release()
    assert r.reply(5) is True  # woken by our release
    assert obj.acquire(False) is False  # held there, seen here
    r.exec(f"{n}.release()")
    assert obj.acquire(False) is True
    obj.release()


def _rlock(obj, r, n):
    assert obj.acquire() is True
    assert r.eval(f"{n}.acquire(timeout=0.2)") is False
    with pytest.raises(RemoteError) as ei:
        r.eval(f"{n}.release()")
    assert ei.value.type_name == "AssertionError"
    r.send("eval", f"{n}.acquire(timeout=10)")
    wait_blocked(r, wchan="futex")
    assert not r.pending_reply()
    obj.release()
    assert r.reply(5) is True
    assert r.eval(f"{n}.acquire(False)") is True  # re-entrant there
    assert obj.acquire(False) is False
    with pytest.raises(AssertionError):
        obj.release()  # owned by the other process
    r.exec(f"{n}.release(); {n}.release()")
    assert obj.acquire(False) is True
    obj.release()


def _semaphore(obj, r, n):  # Semaphore(0)
    r.send("eval", f"{n}.acquire(timeout=10)")
    wait_blocked(r, wchan="futex")
    assert not r.pending_reply()
    obj.release()
    assert r.reply(5) is True
    obj.release()
    obj.release()
    assert r.eval(f"{n}.get_value()") == 2
    r.exec(f"{n}.acquire()")
    assert obj.get_value() == 1


def _bounded_semaphore(obj, r, n):  # BoundedSemaphore(2)
    obj.acquire()
    obj.acquire()
    assert r.eval(f"{n}.get_value()") == 0
    assert r.eval(f"{n}.acquire(timeout=0.2)") is False
    r.exec(f"{n}.release()")
    assert obj.get_value() == 1
    r.exec(f"{n}.release()")
    with pytest.raises(ValueError):
        obj.release()  # the bound holds across processes
    with pytest.raises(RemoteError) as ei:
        r.eval(f"{n}.release()")
    assert ei.value.type_name == "ValueError"


def _event(obj, r, n):
    r.send("eval", f"{n}.wait(10)")
    wait_blocked(r, wchan="futex")
    assert not r.pending_reply()
    obj.set()
    assert r.reply(5) is True
    r.exec(f"{n}.clear()")
    assert obj.is_set() is False
    r.exec(f"{n}.set()")
    assert obj.wait(5) is True


def _condition(obj, r, n):
    # they wait, we notify
    r.send("exec", f"{n}.acquire()\nr_ = {n}.wait(10)\n{n}.release()")
    wait_blocked(r, wchan="futex")
    assert not r.pending_reply()
    assert wait_until(lambda: _notify(obj) and r.pending_reply(0.01), 5)
    r.reply(1)
    assert r.eval("r_") is True
    # we wait, they notify
    def wait_here():
        with obj:
            return obj.wait(10)

    task = ThreadTask(wait_here)
    wait_blocked(task)
    assert task.is_alive()
    deadline = time.monotonic() + 5
    while task.is_alive() and time.monotonic() < deadline:
        r.exec(f"with {n}: {n}.notify()")
        task.join(0.02)
    assert task.result(1) is True
    # the lock is shared too
    with obj:
        assert r.eval(f"{n}.acquire(timeout=0.2)") is False


def _notify(cond):
    with cond:
        cond.notify()
    return True


def _barrier(obj, r, n):  # Barrier(2)
    r.send("eval", f"{n}.wait(10)")
    wait_blocked(r, wchan="futex")
    assert not r.pending_reply()
    assert wait_until(lambda: obj.n_waiting == 1, 5)
    mine = obj.wait(10)
    theirs = r.reply(5)
    assert {mine, theirs} == {0, 1}
    r.exec(f"{n}.abort()")
    assert obj.broken is True
    obj.reset()
    assert r.eval(f"{n}.broken") is False


def _value(obj, r, n):  # Value('i')
    obj.value = 42
    assert r.eval(f"{n}.value") == 42
    r.exec(f"{n}.value = -7")
    assert obj.value == -7
    with obj.get_lock():
        assert r.eval(f"{n}.get_lock().acquire(timeout=0.2)") is False
    r.exec(f"with {n}.get_lock(): {n}.value += 1")
    assert obj.value == -6


def _value_struct(obj, r, n):  # Value(Point)
    obj.x, obj.y = 1, 2.5
    assert r.eval(f"({n}.x, {n}.y)") == (1, 2.5)
    r.exec(f"{n}.y = -4.0")
    assert obj.y == -4.0


def _array(obj, r, n):  # Array('d', 8)
    obj[3] = 1.5
    assert r.eval(f"{n}[3]") == 1.5
    assert r.eval(f"len({n})") == 8
    r.exec(f"{n}[:] = [float(i) for i in range(8)]")
    assert obj[:] == [float(i) for i in range(8)]
    with obj.get_lock():
        assert r.eval(f"{n}.get_lock().acquire(timeout=0.2)") is False


def _char_array(obj, r, n):  # Array('c', 8)
    obj.value = b"hi"
    assert r.eval(f"{n}.value") == b"hi"
    r.exec(f"{n}.raw = b'abcdefgh'")
    assert obj.value == b"abcdefgh"


def _raw_value(obj, r, n):  # RawValue('q')
    obj.value = 2**40
    assert r.eval(f"{n}.value") == 2**40
    r.exec(f"{n}.value = 5")
    assert obj.value == 5


def _raw_array(obj, r, n):  # RawArray('i', 4)
    obj[0] = 11
    assert r.eval(f"{n}[:]") == [11, 0, 0, 0]
    r.exec(f"{n}[3] = -1")
    assert obj[:] == [11, 0, 0, -1]


# name: (code creating it, given module `cproc` and class `Point`; scenario)
KINDS = {
    "Lock": ("cproc.Lock()", _lock),
    "RLock": ("cproc.RLock()", _rlock),
    "Semaphore": ("cproc.Semaphore(0)", _semaphore),
    "BoundedSemaphore": ("cproc.BoundedSemaphore(2)", _bounded_semaphore),
    "Event": ("cproc.Event()", _event),
    "Condition": ("cproc.Condition()", _condition),
    "Condition(Lock)": ("cproc.Condition(cproc.Lock())", _condition),
    "Barrier": ("cproc.Barrier(2)", _barrier),
    "Value": ("cproc.Value('i', 0)", _value),
    "Value(Point)": ("cproc.Value(Point)", _value_struct),
    "Array": ("cproc.Array('d', 8)", _array),
    "Array('c')": ("cproc.Array('c', 8)", _char_array),
    "RawValue": ("cproc.RawValue('q', 0)", _raw_value),
    "RawArray": ("cproc.RawArray('i', 4)", _raw_array),
}


def _make(cproc, kind):
    return eval(KINDS[kind][0], {"cproc": cproc, "Point": Point})  # noqa: S307


def _same_lock(obj, twin):
    with obj:
        assert ThreadTask(twin.acquire, False).result() is False
    assert ThreadTask(lambda: twin.acquire(False) and (twin.release() or True)).result() is True


def _same_barrier(obj, twin):
    task = ThreadTask(twin.wait, 5)
    assert sorted([obj.wait(5), task.result(5)]) == [0, 1]


def _same_value(obj, twin):
    obj.value = 99
    assert twin.value == 99


def _same_array(obj, twin):
    obj[1] = 3
    assert twin[1] == 3


def _same_event(obj, twin):
    obj.set()
    assert twin.is_set() is True


def _same_semaphore(obj, twin):
    twin.release()
    assert obj.get_value() == 1


def _same_bounded_semaphore(obj, twin):
    twin.acquire()
    assert obj.get_value() == 1


def _same_point(obj, twin):
    obj.x = 3
    assert twin.x == 3


def _same_chars(obj, twin):
    obj.value = b"q"
    assert twin.value == b"q"


SAME_STATE = {
    "Lock": _same_lock, "RLock": _same_lock, "Semaphore": _same_semaphore,
    "BoundedSemaphore": _same_bounded_semaphore, "Event": _same_event,
    "Condition": _same_lock, "Condition(Lock)": _same_lock, "Barrier": _same_barrier,
    "Value": _same_value, "Value(Point)": _same_point, "Array": _same_array,
    "Array('c')": _same_chars, "RawValue": _same_value, "RawArray": _same_array,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_pickle_in_same_process_shares_state(cproc, kind):
    obj = _make(cproc, kind)
    data = pickle.dumps(obj)
    assert len(data) < 4096  # a handle, not a copy of the memory
    twin = pickle.loads(data)
    assert type(twin) is type(obj)
    SAME_STATE[kind](obj, twin)


def _unaliased(cproc, kind, obj):
    """Fresh objects of the same kind must not share obj's memory."""
    if kind in ("Lock", "RLock"):
        fresh = [getattr(cproc, kind)() for _ in range(20)]
        for f in fresh:
            f.acquire()
        assert ThreadTask(lambda: obj.acquire(False) and (obj.release() or True)).result() is True
        for f in fresh:
            f.release()
    elif kind == "Event":
        fresh = [cproc.Event() for _ in range(20)]
        for f in fresh:
            f.set()
        assert obj.is_set() is False
    elif kind == "Semaphore":
        fresh = [cproc.Semaphore(5) for _ in range(20)]
        assert obj.get_value() == 0
    elif kind in ("Value", "RawValue"):
        fresh = [cproc.Value("i", 77) if kind == "Value" else cproc.RawValue("q", 77) for _ in range(20)]
        assert obj.value == 0
        for f in fresh:
            f.value = 99
        assert obj.value == 0
    elif kind in ("Array", "RawArray"):
        fresh = [cproc.Array("d", [9.0] * 8) if kind == "Array" else cproc.RawArray("i", [9] * 4) for _ in range(20)]
        assert all(x == 0 for x in obj[:])
    else:
        raise AssertionError(kind)


ALIAS_KINDS = ["Lock", "RLock", "Event", "Semaphore", "Value", "Array", "RawValue", "RawArray"]


@pytest.mark.parametrize("kind", ALIAS_KINDS)
def test_deleting_an_unpickled_copy_keeps_the_original(cproc, kind):
    obj = _make(cproc, kind)
    for _ in range(3):
        twin = pickle.loads(pickle.dumps(obj))
        del twin
        gc.collect()
    _unaliased(cproc, kind, obj)
    twin = pickle.loads(pickle.dumps(obj))  # still a valid handle
    SAME_STATE[kind](obj, twin)


@pytest.mark.parametrize("kind", ALIAS_KINDS)
def test_copy_dropped_by_exited_child_keeps_the_original(cproc, kind):
    obj = _make(cproc, kind)
    with Remote("fork") as r:
        r.load("x", obj)
        r.exec("del x\nimport gc\ngc.collect()")
    _unaliased(cproc, kind, obj)
    twin = pickle.loads(pickle.dumps(obj))
    SAME_STATE[kind](obj, twin)


@pytest.mark.parametrize("protocol", list(range(0, pickle.HIGHEST_PROTOCOL + 1)))
def test_pickle_all_protocols(cproc, protocol):
    lock = cproc.Lock()
    value = cproc.Value("i", 5)
    twin_lock, twin_value = pickle.loads(pickle.dumps((lock, value), protocol=protocol))
    with lock:
        assert twin_lock.acquire(False) is False
    twin_value.value = 6
    assert value.value == 6


@pytest.mark.parametrize("kind", list(KINDS))
def test_send_to_running_fork_child(cproc, kind):
    with Remote("fork") as r:  # forked BEFORE the object exists
        r.exec("import cproc")
        obj = _make(cproc, kind)
        r.load("o", obj)
        KINDS[kind][1](obj, r, "o")


@pytest.mark.parametrize("kind", list(KINDS))
def test_receive_from_running_fork_child(cproc, kind):
    with Remote("fork") as r:
        r.exec("import cproc\no = " + KINDS[kind][0])
        obj = r.fetch("o")
        KINDS[kind][1](obj, r, "o")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(KINDS))
def test_spawn_child_both_directions(cproc, kind):
    with Remote("spawn") as r:
        assert r.eval("'cproc' in __import__('sys').modules") is False
        obj = _make(cproc, kind)
        r.load("o", obj)  # unpickling imports cproc afresh there
        assert r.eval("'cproc' in __import__('sys').modules") is True
        KINDS[kind][1](obj, r, "o")
        r.exec("import cproc\nback = " + KINDS[kind][0])
        back = r.fetch("back")
        KINDS[kind][1](back, r, "back")


def test_objects_inside_containers(cproc):
    with Remote("fork") as r:
        payload = {"lock": cproc.Lock(), "values": [cproc.Value("i", 1), cproc.Array("i", [1, 2])]}
        r.load("p", payload)
        r.exec("p['values'][0].value = 10\np['values'][1][1] = 20\np['lock'].acquire()")
        assert payload["values"][0].value == 10
        assert payload["values"][1][:] == [1, 20]
        assert payload["lock"].acquire(False) is False
        payload["lock"].release()


def test_passed_on_to_a_third_process(cproc):
    value = cproc.Value("i", 0)
    with Remote("fork") as a, Remote("fork") as b:
        a.load("v", value)
        data = a.eval("pickle.dumps(v)")  # a re-pickles what it received
        b.send("load", ("v", data))
        b.reply()
        b.exec("v.value = 123")
        assert value.value == 123
        assert a.eval("v.value") == 123


def test_object_outlives_the_child_that_created_it(cproc):
    with Remote("fork") as r:
        r.exec("import cproc\nv = cproc.Value('d', 1.5)\na = cproc.Array('i', 1000)\nl = cproc.Lock()")
        v, a, lock = r.fetch("v"), r.fetch("a"), r.fetch("l")
    # the creator has exited
    assert v.value == 1.5
    v.value = 2.5
    assert v.value == 2.5
    a[999] = 7
    assert a[999] == 7
    with lock:
        assert lock.acquire(False) is False


def test_object_outlives_a_sigkilled_creator(cproc):
    with Remote("fork") as r:
        r.exec("import cproc\nv = cproc.Value('i', 3)\nl = cproc.Lock()")
        v, lock = r.fetch("v"), r.fetch("l")
        r.kill()
    assert v.value == 3
    v.value = 4
    assert v.value == 4
    assert lock.acquire(timeout=1) is True
    lock.release()


def test_plain_ctypes_pickling_unaffected(cproc):
    c = ctypes.c_double(1.5)
    copy = pickle.loads(pickle.dumps(c))
    copy.value = 2.0
    assert c.value == 1.5  # an ordinary ctypes object still pickles by value
    p = Point(1, 2.5)
    p2 = pickle.loads(pickle.dumps(p))
    p2.x = 5
    assert (p.x, p2.x, p2.y) == (1, 5, 2.5)


def test_repeated_sending_does_not_accumulate_fds(cproc):
    lock = cproc.Lock()
    arr = cproc.Array("d", 1 << 18)  # big enough for a segment of its own
    with Remote("fork") as r:
        r.load("x", (lock, arr))
        r.exec("del x")
        before_here = len(fd_links())
        before_there = r.eval("len(os.listdir('/proc/self/fd'))")
        for _ in range(50):
            r.load("x", (lock, arr))
            r.exec("del x")
            pickle.loads(pickle.dumps((lock, arr)))
        gc.collect()
        r.exec("import gc; gc.collect()")
        assert wait_until(lambda: len(fd_links()) <= before_here, 2), fd_links()
        assert r.eval("len(os.listdir('/proc/self/fd'))") <= before_there


# ==========================================================================
# 2. dead holders


def test_owner_died_warning_is_runtime_warning(cproc):
    assert issubclass(cproc.OwnerDiedWarning, RuntimeWarning)


def _make_lock(cproc, kind):
    if kind == "Lock":
        return cproc.Lock(), cproc.Lock
    if kind == "RLock":
        return cproc.RLock(), cproc.RLock
    if kind == "Value.get_lock":
        v = cproc.Value("i", 0)
        return v.get_lock(), None
    raise AssertionError(kind)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("reap", [True, False], ids=["reaped", "zombie"])
@pytest.mark.parametrize("kind", ["Lock", "RLock", "Value.get_lock"])
def test_dead_holder_blocked_waiter_recovers(cproc, kind, reap):
    lock, _ = _make_lock(cproc, kind)
    pid = fork_holder(lock, times=2 if kind != "Lock" else 1)
    try:
        with pytest.warns(cproc.OwnerDiedWarning):
            task = ThreadTask(lock.acquire)  # blocks: no timeout
            wait_blocked(task)
            assert task.is_alive(), "acquire did not block while the holder lived"
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            if reap:
                os.waitpid(pid, 0)
            assert task.join(5), "waiter still blocked 5s after the holder died"
        assert task.error is None, task.error
        assert task.value is True
        delay = task.finished_at - killed_at
        assert delay < 1.5, f"lock recovered {delay:.2f}s after the holder's death"
        if not reap:
            assert proc_state(pid) == "Z"  # it was a zombie all along
        # the waiter's thread now holds it (once)
        assert lock.acquire(False) is False
    finally:
        kill_and_reap(pid)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_dead_holder_timed_acquire_recovers(cproc, kind):
    lock, _ = _make_lock(cproc, kind)
    pid = fork_holder(lock, times=2 if kind == "RLock" else 1)
    try:
        killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
        t0 = time.monotonic()
        killer.start()
        with pytest.warns(cproc.OwnerDiedWarning):
            assert lock.acquire(timeout=5) is True
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.29  # it did wait for the holder
        assert elapsed < 0.3 + 1.5
        killer.join()
        if kind == "RLock":
            assert repr(lock) == "<RLock(MainProcess, 1)>"
            lock.release()
            with pytest.raises(AssertionError):
                lock.release()
        else:
            assert repr(lock) == "<Lock(owner=MainProcess)>"
            lock.release()
        assert lock.acquire(False) is True
        lock.release()
    finally:
        kill_and_reap(pid)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("kind", ["Lock", "RLock"])
def test_holder_dead_before_acquire(cproc, kind):
    lock, _ = _make_lock(cproc, kind)
    pid = fork_holder(lock)
    kill_and_reap(pid)
    t0 = time.monotonic()
    with pytest.warns(cproc.OwnerDiedWarning):
        assert lock.acquire(timeout=5) is True
    assert time.monotonic() - t0 < 1.5
    lock.release()
    # recovered once: no further warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error", cproc.OwnerDiedWarning)
        assert lock.acquire(timeout=1) is True
        lock.release()


@pytest.mark.timeout(20)
def test_dead_holder_of_lock_received_by_pickle(cproc):
    lock = cproc.Lock()
    with Remote("fork") as r:
        r.load("l", lock)
        assert r.eval("l.acquire(timeout=5)") is True
        assert lock.acquire(False) is False
        killer = threading.Timer(0.3, r.kill)
        killer.start()
        try:
            with pytest.warns(cproc.OwnerDiedWarning):
                assert lock.acquire(timeout=5) is True
        finally:
            killer.join()
        lock.release()


@pytest.mark.timeout(20)
def test_dead_holder_condition_lock(cproc):
    cond = cproc.Condition()
    pid = fork_holder(cond)
    killer = threading.Timer(0.2, os.kill, (pid, signal.SIGKILL))
    try:
        killer.start()
        with pytest.warns(cproc.OwnerDiedWarning):
            assert cond.acquire(timeout=5) is True
        killer.join()
        assert cond.wait(0.05) is False  # usable: we own it
        cond.release()
    finally:
        kill_and_reap(pid)


@pytest.mark.parametrize("kind", ["Semaphore", "BoundedSemaphore"])
def test_semaphore_has_no_owner_to_recover(cproc, kind):
    sem = getattr(cproc, kind)(1)
    pid = fork_holder(sem)
    kill_and_reap(pid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.monotonic()
        assert sem.acquire(timeout=0.5) is False
        assert time.monotonic() - t0 >= 0.49
    assert not [w for w in caught if issubclass(w.category, cproc.OwnerDiedWarning)]
    assert sem.get_value() == 0


def test_live_holder_is_not_taken_over(cproc):
    lock = cproc.Lock()
    pid = fork_holder(lock)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", cproc.OwnerDiedWarning)
            t0 = time.monotonic()
            assert lock.acquire(timeout=1.2) is False  # longer than the 1 s recovery window
            assert time.monotonic() - t0 >= 1.19
    finally:
        kill_and_reap(pid)


# ==========================================================================
# 5. no leaks


def _all_kinds(cproc):
    return [
        cproc.Lock(), cproc.RLock(), cproc.Semaphore(2), cproc.BoundedSemaphore(2), cproc.Event(),
        cproc.Condition(), cproc.Barrier(3), cproc.Value("i", 1), cproc.Value(Point),
        cproc.Array("d", 16), cproc.Array("c", b"abc"), cproc.RawValue("d"), cproc.RawArray("i", 16),
    ]


def test_segments_are_memfd_not_dev_shm(cproc):
    shm_before = set(os.listdir("/dev/shm"))
    objs = _all_kinds(cproc) + [cproc.Array("d", 1 << 20)]
    with open("/proc/self/maps") as f:
        maps = f.read()
    assert "/memfd:cproc" in maps
    assert memfd_mapped_bytes() >= 8 << 20
    assert not new_dev_shm_entries(shm_before)
    del objs


def test_fds_return_after_objects_deleted(cproc):
    gc.collect()
    before = fd_links()
    objs = [o for _ in range(30) for o in _all_kinds(cproc)]
    objs += [cproc.Array("b", 4 << 20) for _ in range(5)]
    copies = [pickle.loads(pickle.dumps(o)) for o in objs]
    assert copies[0].acquire(False) is True
    copies[0].release()
    del objs, copies
    gc.collect()
    assert wait_until(lambda: len(fd_links()) <= len(before), 2), sorted(
        set(fd_links().items()) - set(before.items())
    )


def test_big_segments_are_unmapped_after_deletion(cproc):
    size = 32 << 20
    baseline = memfd_mapped_bytes()
    for _ in range(24):
        a = cproc.Array("b", size)
        a[size - 1] = 1
        assert memfd_mapped_bytes() >= baseline + size
        del a
    gc.collect()
    # a few cached segments are fine; 24 x 32 MiB kept mapped is a leak
    assert memfd_mapped_bytes() <= baseline + 4 * size


def test_sigkilled_child_holding_objects_leaves_nothing(cproc):
    gc.collect()
    fds_before = len(fd_links())
    shm_before = set(os.listdir("/dev/shm"))
    lock = cproc.Lock()
    arr = cproc.Array("i", 100)
    with Remote("fork") as r:
        r.load("mine", (lock, arr))
        r.exec(
            "import cproc\n"
            "theirs = [cproc.Lock(), cproc.RLock(), cproc.Value('i', 1), cproc.Array('d', 1 << 20),\n"
            "          cproc.Event(), cproc.Barrier(2), cproc.Semaphore(0)]\n"
            "theirs[0].acquire(); theirs[1].acquire(); mine[0].acquire()\n"
        )
        theirs = r.fetch("theirs")
        r.kill()
    # what the dead child created is still good here
    assert theirs[2].value == 1
    theirs[3][12345] = 2.0
    assert theirs[3][12345] == 2.0
    del lock, arr, theirs
    gc.collect()
    assert wait_until(lambda: len(fd_links()) <= fds_before, 2), fd_links()
    assert not new_dev_shm_entries(shm_before)


@pytest.mark.timeout(30)
def test_sigkilled_parent_leaves_no_process_or_file(cproc):
    """A script creating objects, with children of its own, is SIGKILLed:
    nothing of it survives (no orphan helper, no /dev/shm file)."""
    mark = uuid.uuid4().hex
    shm_before = set(os.listdir("/dev/shm"))
    body = (
        "import os, sys, time\n"
        "objs = [m.Lock(), m.RLock(), m.Value('i', 1), m.Array('d', 1 << 20), m.Event(),\n"
        "        m.Condition(), m.Barrier(2), m.Semaphore(0), m.RawArray('b', 1 << 22)]\n"
        "objs[0].acquire()\n"
        "parent = os.getpid()\n"
        "for _ in range(2):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        objs[1].acquire(timeout=0.01)\n"
        "        while os.getppid() == parent:\n"
        "            time.sleep(0.05)\n"
        "        os._exit(0)\n"
        "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    os.environ["CPROC_TEST_MARK"] = mark  # inherited by the script and its descendants
    try:
        proc = spawn_script("cproc", body)
    finally:
        del os.environ["CPROC_TEST_MARK"]
    with proc:
        try:
            assert read_line(proc.stdout, 20) == "ready", proc.stderr.read()
            assert len(_marked_processes(mark)) >= 3
            proc.kill()
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    survivors = wait_until(lambda: not _marked_processes(mark), 3) or _describe(_marked_processes(mark))
    assert survivors is True, f"processes left running: {survivors}"
    assert not new_dev_shm_entries(shm_before)


def _describe(pids):
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:100]
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
            ppid = stat[stat.rindex(")") + 2:].split()[1]
        except OSError:
            cmd, ppid = "?", "?"
        out.append(f"pid {pid} ppid {ppid} state {proc_state(pid)}: {cmd}")
    return out


def _marked_processes(mark):
    needle = f"CPROC_TEST_MARK={mark}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    if proc_state(int(entry)) not in (None, "Z"):
                        found.append(int(entry))
        except OSError:
            continue
    return found
