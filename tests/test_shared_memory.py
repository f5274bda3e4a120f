"""cproc.shared_memory: SharedMemory, ShareableList, SharedMemoryManager.

Differential (fixture ``sm``: multiprocessing.shared_memory or
cproc.shared_memory): the API, values, errors and reprs as the running
Python's multiprocessing.  Interop: a block made by either module attaches
under the other.  cproc-only: its promises (a block is unlinked once every
process using it exited, SIGKILL included; attaching never unlinks nor warns;
track=False keeps it).
"""

import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

import cproc.shared_memory  # noqa: F401  (cproc.shared_memory, as multiprocessing's, is imported explicitly)
from helpers.blocking import wait_until
from helpers.children import FORK
from helpers.scripts import child_env, read_line

pytestmark = pytest.mark.timeout(60)

MP_TRACKS_ATTACH = sys.version_info < (3, 13)


@pytest.fixture(params=["multiprocessing", "cproc"])
def sm(request):
    if request.param == "cproc":
        import cproc.shared_memory as module
    else:
        import multiprocessing.shared_memory as module
    return module


@pytest.fixture
def blocks():
    """A list: append SharedMemory objects; closed and unlinked (if still there) at teardown."""
    made = []
    yield made
    for shm in made:
        shm.close()
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


def exists(name):
    return os.path.exists("/dev/shm/" + name)


# ==========================================================================
# SharedMemory: differential


def test_create_attach_close_unlink(sm, blocks):
    a = sm.SharedMemory(create=True, size=100)
    blocks.append(a)
    assert a.name.startswith("psm_") and not a.name.startswith("/")
    assert a.size == 100 and len(a.buf) == 100 and bytes(a.buf[:4]) == b"\0" * 4
    assert repr(a) == f"SharedMemory({a.name!r}, size=100)"
    a.buf[:5] = b"hello"
    b = sm.SharedMemory(a.name)
    assert b.size == 100 and bytes(b.buf[:5]) == b"hello"
    b.buf[5] = 33
    assert a.buf[5] == 33
    b.close()
    b.close()                                   # twice: no error
    assert b.buf is None
    a.unlink()
    assert not exists(a.name)
    with pytest.raises(FileNotFoundError):
        a.unlink()
    with pytest.raises(FileNotFoundError):
        sm.SharedMemory(a.name)


def test_named_create(sm, blocks):
    name = "psm_t%d" % os.getpid()
    a = sm.SharedMemory(name, create=True, size=10)
    blocks.append(a)
    assert a.name == name and exists(name)
    with pytest.raises(FileExistsError):
        sm.SharedMemory(name, create=True, size=10)
    b = sm.SharedMemory(name=name, size=0)
    assert b.size == 10
    b.close()


@pytest.mark.parametrize("args, kwargs, message", [
    ((), {"size": -1}, "'size' must be a positive integer"),
    ((), {"create": True}, "'size' must be a positive number different from zero"),
    ((), {"create": True, "size": 0}, "'size' must be a positive number different from zero"),
    ((), {}, "'name' can only be None if create=True"),
    ((None, False, 10), {}, "'name' can only be None if create=True"),
])
def test_value_errors(sm, args, kwargs, message):
    with pytest.raises(ValueError) as info:
        sm.SharedMemory(*args, **kwargs)
    assert str(info.value) == message


def test_attach_missing(sm):
    with pytest.raises(FileNotFoundError) as info:
        sm.SharedMemory("psm_nosuchblock")
    assert info.value.errno == 2 and info.value.filename == "/psm_nosuchblock"


def test_pickle_attaches(sm, blocks):
    a = sm.SharedMemory(create=True, size=16)
    blocks.append(a)
    a.buf[0] = 7
    b = pickle.loads(pickle.dumps(a))
    assert type(b) is type(a) and b.name == a.name and b.size == 16 and b.buf[0] == 7
    b.close()


def test_in_forked_child(sm, blocks):
    a = sm.SharedMemory(create=True, size=8)
    blocks.append(a)
    p = FORK.Process(target=_child_writes, args=(sm.__name__, a.name))
    p.start()
    p.join(10)
    assert p.exitcode == 0 and bytes(a.buf[:3]) == b"kid"


def _child_writes(module, name):
    import importlib
    shm = importlib.import_module(module).SharedMemory(name)
    shm.buf[:3] = b"kid"
    shm.close()
    if module == "multiprocessing.shared_memory" and MP_TRACKS_ATTACH:
        from multiprocessing import resource_tracker
        resource_tracker.unregister(shm._name, "shared_memory")   # CPython #82300


# ==========================================================================
# ShareableList: differential

SAMPLE = [1, -2, 2**62, 3.5, True, False, None, "text", "é€", b"bytes", b"", ""]


def test_shareable_list(sm, blocks):
    sl = sm.ShareableList(SAMPLE)
    blocks.append(sl.shm)
    assert type(sl.shm) is sm.SharedMemory
    assert list(sl) == SAMPLE and len(sl) == len(SAMPLE)
    assert sl[-1] == "" and sl[7] == "text"
    sl[0] = 99
    sl[3] = "abc"                      # a str in a float's slot
    sl[7] = None
    assert sl[0] == 99 and sl[3] == "abc" and sl[7] is None
    assert sl.count(None) == 2 and sl.index(99) == 0
    assert repr(sl) == f"ShareableList({list(sl)!r}, name={sl.shm.name!r})"
    assert isinstance(sl.format, str)
    with pytest.raises(IndexError):
        sl[len(SAMPLE)]
    with pytest.raises(IndexError):
        sl[len(SAMPLE)] = 1
    with pytest.raises(ValueError):
        sl.index("absent")
    with pytest.raises(ValueError):
        sl[7] = "x" * 100                 # longer than its slot
    other = sm.ShareableList(name=sl.shm.name)
    assert list(other) == list(sl)
    other[1] = 5
    assert sl[1] == 5
    other.shm.close()
    copy = pickle.loads(pickle.dumps(sl))
    assert type(copy) is type(sl) and list(copy) == list(sl)
    copy.shm.close()


def test_shareable_list_empty_and_errors(sm, blocks):
    empty = sm.ShareableList()
    blocks.append(empty.shm)
    assert list(empty) == [] and len(empty) == 0
    with pytest.raises(KeyError):          # as multiprocessing: no better error
        sm.ShareableList([[1, 2]])
    with pytest.raises(KeyError):
        sm.ShareableList([object()])


# ==========================================================================
# interoperability: one block, either module at either end


def test_cproc_block_attaches_under_multiprocessing(blocks):
    import cproc.shared_memory as csm
    import multiprocessing.shared_memory as msm
    a = csm.SharedMemory(create=True, size=32)
    blocks.append(a)
    a.buf[:3] = b"cpr"
    b = msm.SharedMemory(a.name)
    assert bytes(b.buf[:3]) == b"cpr" and b.size == 32
    b.buf[3] = 1
    b.close()
    if MP_TRACKS_ATTACH:
        from multiprocessing import resource_tracker
        resource_tracker.unregister(b._name, "shared_memory")
    assert a.buf[3] == 1
    sl = csm.ShareableList([1, "two"])
    blocks.append(sl.shm)
    other = msm.ShareableList(name=sl.shm.name)
    assert list(other) == [1, "two"]
    other.shm.close()
    if MP_TRACKS_ATTACH:
        resource_tracker.unregister(other.shm._name, "shared_memory")


def test_multiprocessing_block_attaches_under_cproc():
    import cproc.shared_memory as csm
    import multiprocessing.shared_memory as msm
    a = msm.SharedMemory(create=True, size=32)
    try:
        a.buf[:2] = b"mp"
        b = csm.SharedMemory(a.name)
        assert bytes(b.buf[:2]) == b"mp"
        b.buf[2] = 9
        b.close()
        assert a.buf[2] == 9
    finally:
        a.close()
        a.unlink()


# ==========================================================================
# cproc's promises


def _watchers():
    pids = set()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"_shm_watcher.py" in f.read():
                    pids.add(int(pid))
        except (OSError, ValueError):
            pass
    return pids


def _script(body):
    """A fresh python running body (cproc imported as m), stdout piped."""
    return subprocess.Popen([sys.executable, "-c", "import os, sys, time\nimport cproc as m\n"
                             "import cproc.shared_memory as sm\n" + body],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            bufsize=0, env=child_env())


def _finish(proc):
    if proc.poll() is None:
        proc.kill()
    _out, err = proc.communicate(timeout=20)
    return err.decode()


def test_unlinked_once_every_user_was_sigkilled(cproc):
    # the creator and a forked child that attached are both SIGKILLed
    proc = _script(
        "a = sm.SharedMemory(create=True, size=4096)\n"
        "def child(name):\n"
        "    b = sm.SharedMemory(name)\n"
        "    os.write(1, b'%d\\n' % os.getpid()); time.sleep(60)\n"     # one write each: lines never mix
        "p = m.Process(target=child, args=(a.name,)); p.start()\n"
        "os.write(1, a.name.encode() + b'\\n'); time.sleep(60)\n")
    try:
        lines = [read_line(proc.stdout, 20), read_line(proc.stdout, 20)]   # in either order
        name = next(line for line in lines if line.startswith("psm_"))
        child = int(next(line for line in lines if line != name))
        assert exists(name)
        os.kill(child, signal.SIGKILL)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_until(lambda: not exists(name), 10)
    finally:
        _finish(proc)


def test_kept_block_survives(cproc):
    proc = _script("a = sm.SharedMemory(create=True, size=10, track=False)\n"
                   "a.buf[0] = 42\nprint(a.name, flush=True)\n")
    name = read_line(proc.stdout, 20)
    assert _finish(proc) == ""
    try:
        b = cproc.shared_memory.SharedMemory(name)
        assert b.buf[0] == 42
        b.close()
    finally:
        cproc.shared_memory.SharedMemory(name).unlink()


def _watcher_switches(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("voluntary_ctxt_switches")).split()[1])


def _settle(watcher):
    """Wait until the watcher has woken and slept twice: it has looked at the blocks."""
    n = _watcher_switches(watcher)
    assert wait_until(lambda: _watcher_switches(watcher) >= n + 2, 10)


@pytest.mark.parametrize("holder", ["cproc", "multiprocessing"])
def test_not_unlinked_while_another_process_uses_it(cproc, holder):
    """The creator exits; a process of another program still has the block
    open (cproc) or mapped (multiprocessing): no unlink, no warning, until it
    closes it."""
    before = _watchers()
    proc = _script("a = sm.SharedMemory(create=True, size=100)\na.buf[0] = 5\n"
                   "print(a.name, flush=True)\nsys.stdin.read(1)\n")
    try:
        name = read_line(proc.stdout, 20)
        (watcher,) = wait_until(lambda: _watchers() - before, 10)
        if holder == "cproc":
            b = cproc.shared_memory.SharedMemory(name)
        else:
            import multiprocessing.shared_memory as msm
            b = msm.SharedMemory(name)
            if MP_TRACKS_ATTACH:
                from multiprocessing import resource_tracker
                resource_tracker.unregister(b._name, "shared_memory")
        proc.stdin.write(b"x")
        assert proc.wait(10) == 0
        _settle(watcher)
        assert exists(name) and b.buf[0] == 5
        b.close()
        assert wait_until(lambda: not exists(name), 10)
        assert wait_until(lambda: not os.path.exists(f"/proc/{watcher}"), 10)   # the watcher leaves too
    finally:
        assert _finish(proc) == ""


def test_attaching_child_never_unlinks_or_warns(cproc):
    """A child that attaches and exits leaves the block to its creator,
    which can still attach it by name after closing its own handle."""
    proc = _script(
        "a = sm.SharedMemory(create=True, size=10)\n"
        "def child(name):\n"
        "    b = sm.SharedMemory(name); b.buf[0] = 1; b.close()\n"
        "for method in ('fork', 'spawn', 'forkserver'):\n"
        "    p = m.get_context(method).Process(target=child, args=(a.name,)); p.start(); p.join()\n"
        "    assert p.exitcode == 0\n"
        "a.close()\n"
        "b = sm.SharedMemory(a.name); assert b.buf[0] == 1; b.close(); b.unlink()\n"
        "print('ok', flush=True)\n")
    assert read_line(proc.stdout, 30) == "ok"
    assert proc.wait(10) == 0
    assert _finish(proc) == ""


def test_track_false_attach_and_repickle(cproc, blocks):
    a = cproc.shared_memory.SharedMemory(create=True, size=10, track=False)
    blocks.append(a)
    b = cproc.shared_memory.SharedMemory(a.name, track=False)
    assert b.size == 10
    b.close()


# ==========================================================================
# SharedMemoryManager


def test_shared_memory_manager(cproc):
    from cproc.managers import SharedMemoryManager
    with SharedMemoryManager() as smm:
        shm = smm.SharedMemory(64)
        sl = smm.ShareableList([1, "a"])
        assert type(shm) is cproc.shared_memory.SharedMemory
        assert type(sl) is cproc.shared_memory.ShareableList
        names = [shm.name, sl.shm.name]
        assert all(exists(n) for n in names)
        shm.buf[0] = 3
        assert list(sl) == [1, "a"]
        shm.close()
        sl.shm.close()
    assert not any(exists(n) for n in names)
