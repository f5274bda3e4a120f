"""Shared fixtures.

* ``no_leaks`` (autouse): a test fails if it leaves behind a live child
  process, a zombie, an open fd or a /dev/shm entry. A module-scoped fixture
  that keeps connections open across its tests (test_dask.py's cluster
  client) registers predicates in ``helpers.resources.FD_ALLOWANCES`` (and
  ``SHM_ALLOWANCES``) while it lives.
* ``mp``: parametrized over "multiprocessing" (its fork context) and "cproc",
  for differential tests; select one side with ``-k multiprocessing`` or
  ``-k cproc``.
* ``cproc``: the cproc module, for tests of cproc's own promises (these tests
  are marked ``cproc_only``, so ``-k cproc`` selects them too).
"""

import gc
import os
import pickle
import re
import signal
import sys
import time

import pytest

from helpers.resources import FD_ALLOWANCES, SHM_ALLOWANCES, proc_stats

GRACE = 2.0  # seconds a just-joined child or a just-closed fd may take to go

# multiprocessing.heap keeps its small arenas (an unlinked /dev/shm/pym-* file,
# mapped, fd kept open) for the life of the process, by design.
_MP_HEAP_ARENA = re.compile(r"^/dev/shm/pym-\d+-\S+ \(deleted\)$")


# --------------------------------------------------------------------------
# options, markers


def pytest_configure(config):
    config.addinivalue_line("markers", "cproc_only: a test of a promise cproc makes beyond multiprocessing")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "cproc" in getattr(item, "fixturenames", ()) and "mp" not in item.fixturenames:
            item.add_marker(pytest.mark.cproc_only)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item._call_failed = report.failed
    return report


# --------------------------------------------------------------------------
# the implementations under test


class Impl:
    """multiprocessing (fork context) or cproc, seen through one interface.

    Attribute access goes to the context (multiprocessing) or the module
    (cproc): mp.Lock(), mp.Value(...).  .synchronize and .sharedctypes are the
    corresponding modules.
    """

    def __init__(self, name):
        self.name = name
        if name == "cproc":
            import cproc
            import cproc.sharedctypes
            import cproc.synchronize

            self._ns = cproc
            self.synchronize = cproc.synchronize
            self.sharedctypes = cproc.sharedctypes
        else:
            import multiprocessing
            import multiprocessing.sharedctypes
            import multiprocessing.synchronize

            self._ns = multiprocessing.get_context("fork")
            self.synchronize = multiprocessing.synchronize
            self.sharedctypes = multiprocessing.sharedctypes

    def __getattr__(self, attr):
        return getattr(self._ns, attr)

    def __repr__(self):
        return self.name


@pytest.fixture(params=["multiprocessing", "cproc"])
def mp(request):
    return Impl(request.param)


@pytest.fixture
def cproc():
    import cproc as module

    return module


# --------------------------------------------------------------------------
# leak detection


def _children():
    """{pid: state} of this process's direct children."""
    me = os.getpid()
    return {pid: fields[0] for pid, fields in proc_stats() if int(fields[1]) == me}


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_mp_helper(pid):
    cmd = _cmdline(pid)
    return "resource_tracker" in cmd or "forkserver" in cmd


def _fds():
    links = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            links[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return links


def _ignored_fds():
    ignored = set()
    try:
        from multiprocessing import resource_tracker

        fd = resource_tracker._resource_tracker._fd
        if fd is not None:
            ignored.add(fd)
    except Exception:
        pass
    # cproc.shared_memory's connection to its watcher, kept for the process's life
    shm = sys.modules.get("cproc.shared_memory")
    if shm is not None and shm._sock is not None:
        ignored.add(shm._sock.fileno())
        ignored.add(shm._wfd)           # and the write end of its record pipe
    return ignored


def _dev_shm():
    try:
        return set(os.listdir("/dev/shm"))
    except FileNotFoundError:
        return set()


def _problems(children0, fds0, shm0, check_fds=True):
    problems = []
    kids = {pid: st for pid, st in _children().items() if pid not in children0}
    for pid, state in sorted(kids.items()):
        if state == "Z":
            problems.append(f"zombie child {pid} (never reaped)")
        elif not _is_mp_helper(pid):
            problems.append(f"live child {pid} [{_cmdline(pid)[:80]}] state {state}")
    ignored = _ignored_fds()
    fds = _fds() if check_fds else {}
    for fd, link in sorted(fds.items()):
        if fds0.get(fd) == link or fd in ignored or _MP_HEAP_ARENA.match(link):
            continue
        if any(allowed(fd, link) for allowed in FD_ALLOWANCES):
            continue
        problems.append(f"fd {fd} -> {link} left open")
    for name in sorted(_dev_shm() - shm0):
        if any(allowed(name) for allowed in SHM_ALLOWANCES):
            continue
        problems.append(f"/dev/shm/{name} left behind")
    return problems, kids


def _clean_up(kids):
    for pid, state in kids.items():
        if _is_mp_helper(pid) and state != "Z":
            continue
        try:
            if state != "Z":
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


@pytest.fixture
def closing():
    """A list: append objects with .close() (or int fds); closed at teardown. append objects with .close() (or int fds); closed at teardown."""
    things = []
    yield things
    for thing in reversed(things):
        try:
            if isinstance(thing, int):
                os.close(thing)
            else:
                thing.close()
        except OSError:
            pass


@pytest.fixture
def pipe(mp, closing):
    """pipe(duplex=True) -> mp.Pipe(duplex), both ends closed at teardown."""

    def make(duplex=True):
        a, b = mp.Pipe(duplex)
        closing.extend((a, b))
        return a, b

    return make


@pytest.fixture(autouse=True)
def no_leaks(request):
    children0 = set(_children())
    fds0 = _fds()
    shm0 = _dev_shm()
    yield
    deadline = time.monotonic() + GRACE
    while True:
        gc.collect()
        # a failed test's traceback keeps its locals (and their fds) alive:
        # then only processes and /dev/shm are checked
        check_fds = not getattr(request.node, "_call_failed", False)
        problems, kids = _problems(children0, fds0, shm0, check_fds)
        if not problems or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if problems:
        _clean_up(kids)
        pytest.fail("test left resources behind:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def _warm_up():
    """Let each implementation create its once-per-process state up front.

    An implementation may keep per-process state for the life of the process
    (a first arena segment, a helper).  Creating one of everything before the
    first test puts that state in every test's baseline, so the leak check
    sees only what a test leaves behind.
    """
    try:
        import cproc
    except ImportError:
        cproc = None
    if cproc is not None:
        try:
            objs = [
                cproc.Lock(), cproc.RLock(), cproc.Semaphore(), cproc.BoundedSemaphore(),
                cproc.Event(), cproc.Condition(), cproc.Barrier(2),
                cproc.Value("i"), cproc.Array("d", 4), cproc.RawValue("i"), cproc.RawArray("i", 4),
            ]
            copies = [pickle.loads(pickle.dumps(o)) for o in objs]
            del objs, copies
        except Exception:
            pass  # the tests themselves will report it
    gc.collect()
    yield
