"""Threads and children that report back, for tests to drive.

Everything here is defined at module level so that a child started with the
"spawn" start method can import it (tests/ is on sys.path, which spawn passes
on to the child).  Only the standard library is used (multiprocessing's fork
context, os.pipe, mmap), so that a bug in cproc cannot hide inside the
instrumentation that checks it.
"""

import ctypes
import mmap
import multiprocessing
import os
import pickle
import select
import signal
import threading
import time
import traceback


FORK = multiprocessing.get_context("fork")


class Point(ctypes.Structure):
    """A Structure importable by spawn children (pickled by reference)."""

    _fields_ = [("x", ctypes.c_int), ("y", ctypes.c_double)]


class Payload:
    """A user class that travels (pickled by reference to this module)."""

    def __init__(self, x, items):
        self.x = x
        self.items = items

    def __eq__(self, other):
        return type(other) is Payload and (self.x, self.items) == (other.x, other.items)

    def __repr__(self):
        return f"Payload({self.x!r}, {self.items!r})"


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
        self.thread = threading.Thread(target=self._run, args=(fn, args), daemon=True, name=name)
        self.thread.start()

    def _run(self, fn, args):
        try:
            self.value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def is_alive(self):
        return self.thread.is_alive()

    def join(self, timeout=10.0):
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def result(self, timeout=10.0):
        self.thread.join(timeout)
        if self.thread.is_alive():
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
