"""Helpers shared by the test-suite.

Everything here is defined at module level so that a child started with the
"spawn" start method can import it (tests/ is on sys.path, which spawn passes
on to the child).  The helpers deliberately use only the standard library
(multiprocessing's fork context, os.pipe, mmap) so that a bug in cproc cannot
hide inside the instrumentation that checks it.
"""

import ctypes
import mmap
import multiprocessing
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import traceback

FORK = multiprocessing.get_context("fork")


class Point(ctypes.Structure):
    """A Structure importable by spawn children (pickled by reference)."""

    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


# --------------------------------------------------------------------------
# waiting without sleep-and-hope


def wait_until(predicate, timeout=10.0, interval=0.005):
    """Poll predicate until it is true or timeout passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class SharedInts:
    """n C ints in an anonymous MAP_SHARED mapping.

    Shared with every child forked after it was created, holds no fd, and owes
    nothing to cproc or to multiprocessing's shared memory.
    """

    def __init__(self, n=8):
        self._mm = mmap.mmap(-1, max(mmap.PAGESIZE, 4 * n))
        self._a = (ctypes.c_int * n).from_buffer(self._mm)

    def __getitem__(self, i):
        return self._a[i]

    def __setitem__(self, i, value):
        self._a[i] = value


# --------------------------------------------------------------------------
# threads


class ThreadTask:
    """Run fn(*args) in a daemon thread and keep its result or exception.

    Daemon, so that a thread stuck in a broken primitive cannot stop the test
    process from exiting; tests join it with a timeout and assert it ended.
    """

    def __init__(self, fn, *args, name=None):
        self.value = None
        self.error = None
        self.finished_at = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), daemon=True, name=name)
        self._thread.start()

    def _run(self, fn, args):
        try:
            self.value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def is_alive(self):
        return self._thread.is_alive()

    def join(self, timeout=10.0):
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self, timeout=10.0):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"thread did not finish within {timeout}s")
        if self.error is not None:
            raise self.error
        return self.value


# --------------------------------------------------------------------------
# fork children that report one result


def _child_main(conn, fn, args):
    try:
        result = fn(*args)
    except BaseException:  # noqa: BLE001 - reported to the parent
        conn.send(("err", traceback.format_exc()))
    else:
        conn.send(("ok", result))
    conn.close()


class Child:
    """A fork child (multiprocessing's fork context) running fn(*args).

    Its return value (or traceback) comes back through a pipe.  Always close()
    it (ChildSet does) so that it is joined, or killed and reaped.
    """

    def __init__(self, fn, *args, process=None):
        self._r, w = FORK.Pipe(duplex=False)
        Process = process or FORK.Process
        self.proc = Process(target=_child_main, args=(w, fn, args), daemon=True)
        try:
            self.proc.start()
        finally:
            w.close()
        self.pid = self.proc.pid

    def reported(self, timeout=0.0):
        """True once the child has sent its result (waits up to timeout)."""
        return self._r.poll(timeout)

    def result(self, timeout=10.0):
        if not self._r.poll(timeout):
            raise AssertionError(f"child {self.pid} did not report within {timeout}s")
        status, value = self._r.recv()
        if status == "err":
            raise AssertionError(f"child {self.pid} raised:\n{value}")
        return value

    def join(self, timeout=10.0):
        self.proc.join(timeout)
        if self.proc.exitcode is None:
            raise AssertionError(f"child {self.pid} did not exit within {timeout}s")
        return self.proc.exitcode

    def close(self):
        if self.proc.exitcode is None:
            self.proc.join(0.5)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(5)
        self._r.close()
        if self.proc.exitcode is not None:
            self.proc.close()


class ChildSet:
    """Context manager owning Child processes: every one is closed on exit."""

    def __init__(self, process=None):
        self.process = process    # a Process class; multiprocessing's fork Process by default
        self.children = []

    def start(self, fn, *args):
        child = Child(fn, *args, process=self.process)
        self.children.append(child)
        return child

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for child in self.children:
            child.close()


# --------------------------------------------------------------------------
# a process that did NOT inherit the objects: driven through a pipe


class RemoteError(Exception):
    def __init__(self, type_name, message, tb):
        super().__init__(f"{type_name}: {message}\n--- remote traceback ---\n{tb}")
        self.type_name = type_name
        self.message = message


def rpc_server(conn):
    """Loop in the child: run ('exec'|'eval'|'load', arg) requests, reply."""
    ns = {"pickle": pickle, "os": os, "time": time, "Point": Point}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            break
        if msg is None:
            break
        op, arg = msg
        try:
            if op == "exec":
                exec(arg, ns)  # noqa: S102 - test driver
                result = None
            elif op == "eval":
                result = eval(arg, ns)  # noqa: S307 - test driver
            elif op == "load":
                name, data = arg
                ns[name] = pickle.loads(data)
                result = None
            else:
                raise ValueError(f"unknown op {op!r}")
            conn.send(("ok", result))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            conn.send(("err", (type(exc).__name__, str(exc), traceback.format_exc())))
    conn.close()


class Remote:
    """A running child (fork or spawn) that executes code sent to it.

    Objects reach it only through plain pickle.dumps() bytes sent over a
    multiprocessing Pipe, never by inheritance: create the Remote first, then
    the objects.  send()/reply() allow a call that blocks in the child while
    the parent acts.
    """

    def __init__(self, method="fork"):
        ctx = multiprocessing.get_context(method)
        self._conn, child_conn = ctx.Pipe()
        self.proc = ctx.Process(target=rpc_server, args=(child_conn,), daemon=True)
        try:
            self.proc.start()
        finally:
            child_conn.close()
        self.pid = self.proc.pid
        self._pending = 0

    # raw protocol
    def send(self, op, arg):
        self._conn.send((op, arg))
        self._pending += 1

    def pending_reply(self, timeout=0.0):
        """True if a reply arrived (waits up to timeout)."""
        return self._conn.poll(timeout)

    def reply(self, timeout=10.0):
        if not self._conn.poll(timeout):
            raise AssertionError(f"remote {self.pid} did not reply within {timeout}s")
        status, value = self._conn.recv()
        self._pending -= 1
        if status == "err":
            raise RemoteError(*value)
        return value

    # conveniences
    def eval(self, expr, timeout=10.0):
        self.send("eval", expr)
        return self.reply(timeout)

    def exec(self, code, timeout=10.0):
        self.send("exec", code)
        return self.reply(timeout)

    def load(self, name, obj, timeout=10.0):
        """Send obj as plain pickle.dumps() bytes; the child binds it to name."""
        self.send("load", (name, pickle.dumps(obj)))
        return self.reply(timeout)

    def fetch(self, name, timeout=10.0):
        """The child pickles its object with plain pickle; unpickle it here."""
        return pickle.loads(self.eval(f"pickle.dumps({name})", timeout))

    def kill(self):
        if self.proc.exitcode is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.join(5)

    def close(self):
        if self.proc.exitcode is None and self._pending == 0:
            try:
                self._conn.send(None)
            except OSError:
                pass
            self.proc.join(5)
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(5)
        self._conn.close()
        if self.proc.exitcode is not None:
            self.proc.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------
# raw os.fork holders (for dead-holder tests: we control reaping)


def fork_holder(obj, times=1, method="acquire"):
    """Fork a child that calls obj.<method>() `times` times, then sleeps.

    Returns the child's pid once it holds the object.  The child is never
    reaped here: the caller kills it and reaps it (kill_and_reap).
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            for _ in range(times):
                getattr(obj, method)()
            os.write(w, b"1")
            while True:
                time.sleep(1)
        finally:
            os._exit(1)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 10)
        got = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if got != b"1":
        kill_and_reap(pid)
        raise AssertionError("holder child did not acquire the object within 10s")
    return pid


def kill_and_reap(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def proc_state(pid):
    """The one-letter state of /proc/PID/stat ('R', 'S', 'Z', ...) or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def asleep_in_futex(pid):
    """True while process pid sleeps in the kernel on a futex (a lock,
    semaphore, event or condition wait of either module)."""
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read()
    except OSError:
        return False
    return proc_state(pid) == "S" and "futex" in wchan


def wait_asleep(pid, timeout=10.0):
    """Wait until process pid is actually blocked on a futex; fail otherwise."""
    assert wait_until(lambda: asleep_in_futex(pid), timeout), f"process {pid} never went to sleep"


# --------------------------------------------------------------------------
# fds, mappings, /dev/shm


def fd_links():
    """{fd: readlink target} for this process."""
    links = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            links[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass  # the fd listdir itself used, already closed
    return links


def memfd_mapped_bytes(marker="memfd:cproc"):
    """Total size of this process's mappings of cproc memfd segments."""
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            if marker in line:
                start, end = line.split()[0].split("-")
                total += int(end, 16) - int(start, 16)
    return total


def new_dev_shm_entries(before, grace=1.0):
    """Entries of /dev/shm not in `before` that are still there after `grace`."""
    new = set(os.listdir("/dev/shm")) - before
    if new:
        time.sleep(grace)
        new = set(os.listdir("/dev/shm")) - before
    return new


# --------------------------------------------------------------------------
# subprocess scripts (Ctrl+C tests)


def child_env():
    """Environment for a python subprocess that imports what we import."""
    env = dict(os.environ)
    paths = [p for p in sys.path if isinstance(p, str) and p]
    here = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join([here] + paths)
    return env


def read_line(stream, timeout):
    """Read one line from a binary unbuffered pipe, or None on timeout/EOF."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    buf = b""
    while not buf.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 1)
        if not chunk:
            return buf.decode() if buf else None
        buf += chunk
    return buf.decode().rstrip("\n")


IMPORT_LINES = {
    "multiprocessing": "import multiprocessing\nm = multiprocessing.get_context('fork')\n",
    "cproc": "import cproc as m\n",
}


def spawn_script(impl_name, body):
    """Start `python -c` running IMPORT_LINES[impl_name] + body (stdout piped)."""
    script = IMPORT_LINES[impl_name] + body
    return subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=child_env(),
    )


# --------------------------------------------------------------------------
# Process tests (test_process.py, test_contexts.py): targets and scripts
#
# Every target is a module-level function taking only picklable arguments
# (paths, names, numbers), so that a spawn or forkserver child can import it.
# A child reports through a JSON file, never through a Connection, so that the
# report does not depend on the implementation's pickling of handles.  The
# implementation is named by its module ("multiprocessing" or "cproc") and
# imported in the child.

import importlib  # noqa: E402
import json  # noqa: E402

# Set by a test in the parent before start(): a fork child sees the new value,
# a spawn or forkserver child (which imports this module afresh) sees 0.
MARK = 0


def impl_module(modname):
    """The module under test by name ("multiprocessing" or "cproc")."""
    return importlib.import_module(modname)


def write_json(path, data):
    """Write data as JSON to path atomically (readers never see half a file)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def read_json(path, timeout=10.0):
    """Wait until path exists, then return its JSON content."""
    if not wait_until(lambda: os.path.exists(path), timeout):
        raise AssertionError(f"{path} was not written within {timeout}s")
    with open(path) as f:
        return json.load(f)


def exc_info_pair(exc):
    return [type(exc).__name__, str(exc)]


def pickle_error(obj):
    """(type, message) of what the running Python's pickle raises for obj: the
    error multiprocessing passes on when it pickles obj by reference (3.13 says
    "Can't get local object ..." where 3.9-3.12 say "Can't pickle local object ...")."""
    try:
        pickle.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - the error is the result
        return type(exc), str(exc)
    raise AssertionError(f"{obj!r} pickles")


def proc_noop():
    pass


def proc_sleep(seconds):
    time.sleep(seconds)


def proc_touch_then_sleep(path, seconds):
    """Write path (the parent waits for it: 'the child runs'), then sleep."""
    write_json(path, os.getpid())
    time.sleep(seconds)


def proc_ignore_sigterm(path, seconds):
    """Ignore SIGTERM, say so through path, then sleep."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    write_json(path, os.getpid())
    time.sleep(seconds)


def proc_catch_sigint(path, seconds):
    """Say so through path, then sleep; a KeyboardInterrupt is reported in path + '.int'."""
    write_json(path, os.getpid())
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        write_json(path + ".int", "KeyboardInterrupt")


def proc_report(path, modname, preload_name=None):
    """Report what a child sees of itself and of its parent."""
    m = impl_module(modname)
    cp = m.current_process()
    pp = m.parent_process()
    data = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "name": cp.name,
        "daemon": cp.daemon,
        "ident": cp.ident,
        "cp_pid": cp.pid,
        "authkey": bytes(cp.authkey).hex(),
        "mark": MARK,
        "parent": None if pp is None else {
            "name": pp.name,
            "pid": pp.pid,
            "alive": pp.is_alive(),
            "daemon": pp.daemon,
        },
        "parent_repr": repr(pp),
        "current_repr": repr(cp),
        "start_method": m.get_start_method(allow_none=True),
        "preloaded": preload_name is not None and preload_name in sys.modules,
    }
    write_json(path, data)


def proc_args_report(path, *args, **kwargs):
    write_json(path, {"args": list(args), "kwargs": kwargs})


def proc_exit(how):
    """Leave the process in the way `how` names (see EXIT_PATHS in test_process)."""
    if how == "return":
        return
    if how == "return_value":
        return 5  # the return value of run() is ignored
    if how == "raise":
        raise ValueError("boom")
    if how == "keyboardinterrupt":
        raise KeyboardInterrupt
    if how == "exit_none":
        sys.exit()
    if how == "exit_0":
        sys.exit(0)
    if how == "exit_3":
        sys.exit(3)
    if how == "exit_300":
        sys.exit(300)  # os._exit(300): the status is 300 & 0xff = 44
    if how == "exit_minus_1":
        sys.exit(-1)  # os._exit(-1): the status is 255
    if how == "exit_true":
        sys.exit(True)
    if how == "exit_msg":
        sys.exit("fatal: bad thing")
    if how == "os_exit_7":
        os._exit(7)
    if how == "sigusr1":
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(10)
    if how == "sigkill_self":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    raise AssertionError(f"unknown exit path {how!r}")


def proc_nested(path, modname, method, daemon_child=False):
    """Start a grandchild with the same start method and report both names."""
    m = impl_module(modname)
    ctx = m.get_context(method)
    report = {"name": m.current_process().name}
    gc_path = path + ".grandchild"
    try:
        p = ctx.Process(target=proc_report, args=(gc_path, modname), daemon=daemon_child)
        report["grandchild_name_before_start"] = p.name
        p.start()
        p.join(20)
        report["grandchild_exitcode"] = p.exitcode
        with open(gc_path) as f:
            report["grandchild"] = json.load(f)
        report["active_after_join"] = [q.name for q in m.active_children()]
        p.close()
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        report["error"] = exc_info_pair(exc)
    write_json(path, report)


def proc_misuse_in_child(path, modname, method):
    """Misuse that is only possible inside a child: report each error."""
    m = impl_module(modname)
    report = {}
    me = m.current_process()
    try:
        me.join()
        report["join_self"] = None
    except Exception as exc:  # noqa: BLE001
        report["join_self"] = exc_info_pair(exc)
    try:
        report["is_alive_self"] = me.is_alive()
    except Exception as exc:  # noqa: BLE001
        report["is_alive_self"] = exc_info_pair(exc)
    try:
        p = m.get_context(method).Process(target=proc_noop)
        p.start()
        p.join()
        report["daemon_start_child"] = None
    except Exception as exc:  # noqa: BLE001
        report["daemon_start_child"] = exc_info_pair(exc)
    write_json(path, report)


def pid_gone(pid):
    """True once pid no longer names a running process (gone, or a zombie)."""
    state = proc_state(pid)
    return state is None or state in ("Z", "X")


# --------------------------------------------------------------------------
# Process tests: the implementation and start method under test

START_METHODS = ("fork", "spawn", "forkserver")
PROCESS_CLASS = {"fork": "ForkProcess", "spawn": "SpawnProcess", "forkserver": "ForkServerProcess"}


def cproc_method_works(method):
    """True if cproc offers `method` (listed and its context can be had)."""
    try:
        import cproc

        if method not in cproc.get_all_start_methods():
            return False
        cproc.get_context(method)
        return True
    except Exception:  # noqa: BLE001 - not there yet
        return False


def impl_method_params(methods=START_METHODS, impls=("multiprocessing", "cproc")):
    """pytest params (impl name, start method), ids like "cproc-spawn".

    A cproc forkserver that is not available yet is an expected failure
    (strict=False: the test passes again as soon as it works).
    """
    import pytest

    params = []
    for name in impls:
        for method in methods:
            marks = []
            if name == "cproc" and method == "forkserver" and not cproc_method_works(method):
                marks.append(pytest.mark.xfail(strict=False, reason="forkserver not implemented yet"))
            params.append(pytest.param((name, method), id=f"{name}-{method}", marks=marks))
    return params


class ProcImpl:
    """One implementation ("multiprocessing" or "cproc") with one start method.

    .module is the package (module-level functions), .ctx its context for the
    start method, .Process that context's Process class, .wait the package's
    connection.wait.
    """

    def __init__(self, name, method):
        self.name = name
        self.method = method

    @property
    def module(self):
        return importlib.import_module(self.name)

    @property
    def ctx(self):
        return self.module.get_context(self.method)

    @property
    def Process(self):  # noqa: N802 - mirrors the API
        return self.ctx.Process

    @property
    def wait(self):
        return importlib.import_module(self.name + ".connection").wait

    @property
    def process_class_name(self):
        return PROCESS_CLASS[self.method]

    def reference(self):
        return ProcImpl("multiprocessing", self.method)

    def __repr__(self):
        return f"{self.name}-{self.method}"


# Put at the top of every script that run_impl_script runs: the implementation
# and start method come from the environment (not argv), so that a spawn child
# and a forkserver server, which import the script again as __mp_main__, pick
# the same ones.
SCRIPT_PRELUDE = """\
import os, sys, time
IMPL = os.environ["TEST_IMPL"]
METHOD = os.environ["TEST_METHOD"]
if IMPL == "cproc":
    import cproc as m
    import cproc.connection
else:
    import multiprocessing as m
    import multiprocessing.connection
ctx = m.get_context(METHOD)
P = ctx.Process
"""


class ScriptResult:
    """What a script run left: returncode, stdout, stderr (text), elapsed
    seconds, and leftover: whether processes of its session were still
    running 2 s after the main process ended (they are killed then)."""

    def __init__(self, returncode, stdout, stderr, elapsed, leftover):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.elapsed = elapsed
        self.leftover = leftover


def _write_script(directory, name, body, prelude):
    path = os.path.join(str(directory), name + ".py")
    with open(path, "w") as f:
        f.write(prelude + body)
    return path


def _script_env(impl, method):
    env = child_env()
    env["TEST_IMPL"] = impl
    env["TEST_METHOD"] = method
    env.pop("PYTHONUNBUFFERED", None)
    return env


# What a test module's long-lived fixture may create during any of its tests
# (e.g. a Dask client's connections to its scheduler, the semaphores of a
# restarted Dask worker): predicates fd_allowed(fd, link) -> bool and
# shm_allowed(name) -> bool, which the leak check (conftest.no_leaks) skips.
FD_ALLOWANCES = []
SHM_ALLOWANCES = []


def tcp_peers():
    """{socket inode: (remote ip, remote port)} of this process's TCP sockets (IPv4)."""
    peers = {}
    try:
        with open("/proc/self/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                ip, port = fields[2].split(":")
                addr = ".".join(str(int(ip[i:i + 2], 16)) for i in (6, 4, 2, 0))
                peers[int(fields[9])] = (addr, int(port, 16))
    except OSError:
        pass
    return peers


def proc_stats():
    """Yield (pid, fields) for every process: fields are /proc/<pid>/stat after
    the command name, so fields[0] is the state, [1] the ppid, [3] the session."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(entry), stat[stat.rindex(")") + 2:].split()


def session_alive(sid):
    """True while a live (not zombie) process of session `sid` exists.

    Zombies do not count: an orphan's zombie waits for init to reap it."""
    return any(int(fields[3]) == sid and fields[0] not in ("Z", "X")
               for _, fields in proc_stats())


def assert_sigint_interrupts(proc, expected_post, line_timeout):
    """proc printed "ready" and blocked: SIGINT must raise KeyboardInterrupt in
    it within 1 s, after which it prints "after <expected_post>" and exits 0."""
    time.sleep(0.2)  # let it block
    assert proc.poll() is None, "the call did not block"
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    line = read_line(proc.stdout, line_timeout)
    elapsed = time.monotonic() - t0
    assert line == "KeyboardInterrupt", f"got {line!r} within {line_timeout}s of SIGINT instead"
    assert elapsed < 1.0, f"KeyboardInterrupt came {elapsed:.2f}s after SIGINT"
    assert read_line(proc.stdout, 10) == f"after {expected_post}"
    assert proc.wait(10) == 0


# A script that blocks in {call} after printing "ready"; on Ctrl+C it prints
# "KeyboardInterrupt", then "after <repr of {post}>", and exits 0.
CTRL_C_SCRIPT = r"""
sys.stdout.write('ready\n'); sys.stdout.flush()
try:
    {call}
except KeyboardInterrupt:
    sys.stdout.write('KeyboardInterrupt\n'); sys.stdout.flush()
    sys.stdout.write('after %r\n' % ({post},)); sys.stdout.flush()
    sys.exit(0)
sys.stdout.write('returned\n'); sys.stdout.flush()
sys.exit(3)
"""

# A script whose second thread blocks in {call} while the main thread counts
# how often it runs, then does {finish} to unblock it: "spins N alive", then
# "result <repr of what call returned> alive".
GIL_SCRIPT = r"""
import threading
{setup}
res = {{}}
def blocked():
    try:
        res['v'] = {call}
    except BaseException as e:
        res['v'] = repr(e)
t = threading.Thread(target=blocked, daemon=True)
t.start()
time.sleep(0.1)
spins = 0
t_end = time.monotonic() + 0.3
while time.monotonic() < t_end:
    spins += 1
print('spins', spins, t.is_alive(), flush=True)
{finish}
t.join(10)
print('result', repr(res.get('v')), t.is_alive(), flush=True)
"""


def check_ctrl_c_script(proc, expected_post, line_timeout=3):
    """proc runs CTRL_C_SCRIPT: it gets ready, SIGINT interrupts it at once
    (assert_sigint_interrupts); its stderr has no traceback.  Ends proc."""
    stderr = ""
    try:
        line = read_line(proc.stdout, 20)
        assert line == "ready", f"script did not get ready: {line!r}"
        assert_sigint_interrupts(proc, expected_post, line_timeout)
    finally:
        stderr = end_script(proc)
    assert "Traceback" not in stderr, stderr


def check_gil_script(proc, expected, peer_line=None):
    """proc runs GIL_SCRIPT: the main thread kept running (and the call kept
    blocking) until finish, then the call returned `expected` (a repr), after
    the optional peer_line.  Ends proc."""
    stderr = ""
    try:
        line = read_line(proc.stdout, 20)
        assert line is not None, "the main thread never ran again while another thread was blocked"
        word, spins, alive = line.split()
        assert word == "spins"
        assert int(spins) > 10000, f"main thread starved ({spins} spins) while another thread was blocked"
        assert alive == "True", "the call did not block"
        if peer_line is not None:
            assert read_line(proc.stdout, 10) == peer_line
        assert read_line(proc.stdout, 10) == f"result {expected} False"
        assert proc.wait(10) == 0
    finally:
        stderr = end_script(proc)
    assert "Traceback" not in stderr, stderr


def end_script(proc):
    """Kill what is left of a popen_impl_script session; its stderr as text."""
    kill_session(proc.pid)
    proc.wait(10)
    stderr = proc.stderr.read().decode(errors="replace")
    proc.stdout.close()
    proc.stderr.close()
    return stderr


def kill_session(sid):
    try:
        os.killpg(sid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_impl_script(directory, name, body, impl, method, timeout=30.0, prelude=SCRIPT_PRELUDE,
                    leftover_grace=2.0):
    """Write prelude + body to directory/name.py and run it in `directory`.

    TEST_IMPL/TEST_METHOD are set; the script runs in its own session with
    stdout/stderr going to files (so that a child that outlives the main
    process cannot hold the run open); whatever of the session still runs
    `leftover_grace` s after the main process ended is reported and killed.
    Raises subprocess.TimeoutExpired (after killing the session) on timeout.
    """
    path = _write_script(directory, name, body, prelude)
    out_path, err_path = path + ".stdout", path + ".stderr"
    t0 = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, path], cwd=str(directory), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err, env=_script_env(impl, method),
                                start_new_session=True)
    try:
        try:
            returncode = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_session(proc.pid)
            proc.wait()
            raise
        elapsed = time.monotonic() - t0
        with open(out_path, "rb") as f:
            stdout = f.read().decode("utf-8", "replace")
        with open(err_path, "rb") as f:
            stderr = f.read().decode("utf-8", "replace")
        leftover = not wait_until(lambda: not session_alive(proc.pid), leftover_grace, 0.02)
    finally:
        kill_session(proc.pid)
    return ScriptResult(returncode, stdout, stderr, elapsed, leftover)


def popen_impl_script(directory, name, body, impl, method, prelude=SCRIPT_PRELUDE):
    """As run_impl_script, but started with Popen (binary unbuffered pipes).

    Own session too: the caller ends with kill_session(proc.pid)."""
    path = _write_script(directory, name, body, prelude)
    return subprocess.Popen(
        [sys.executable, path],
        cwd=str(directory),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        env=_script_env(impl, method),
        start_new_session=True,
    )


def stderr_outline(text):
    """The user-visible outline of stderr: tracebacks reduced to their header
    and last line.  Drops the indented frame lines ("  File ...", source,
    carets) that name files and line numbers; keeps "Process NAME:" headers,
    "Traceback (most recent call last):", exception lines and messages."""
    return [line for line in text.splitlines() if line and not line[0].isspace()]


def proc_misuse_foreign(path, other, unstarted):
    """In a fork child: use Process objects that the parent created."""
    report = {}
    for key, fn in (("join", lambda: other.join(0.1)),
                    ("is_alive", other.is_alive),
                    ("start", unstarted.start)):
        try:
            fn()
            report[key] = None
        except Exception as exc:  # noqa: BLE001
            report[key] = exc_info_pair(exc)
    write_json(path, report)


def warm_up_start_methods():
    """Start (and join) one empty process per start method and implementation.

    The first forkserver process starts the server, whose pipe and socket the
    parent keeps for its whole life (multiprocessing's and cproc's alike); a
    module-scoped fixture calls this first, so that these fds are in every
    test's leak baseline.  A failure here is left to the tests to report.
    """
    for name in ("multiprocessing", "cproc"):
        for method in START_METHODS:
            try:
                p = ProcImpl(name, method).Process(target=proc_noop)
                p.start()
                p.join(30)
                if p.exitcode is None:
                    p.kill()
                    p.join(5)
                p.close()
            except Exception:  # noqa: BLE001 - the tests report it
                pass


def proc_ignore_args(*args, **kwargs):
    pass
