"""The forkserver start method.

A server process, started once per client process as a fresh interpreter
(posix_spawn, csrc/process.c), imports the preload modules and then forks a
child for each request with the C engine (_cproc.Popen), so children start
from a small, clean, warm process instead of a copy of the client.

Protocol, over a socketpair between the client and its server:
  client -> server: one byte, with fds passed by SCM_RIGHTS: the read end
                    of a pipe carrying the pickled preparation data and
                    Process (as for spawn), the child's status socket, and
                    the fds the Process's pickle refers to (DupFd);
  server -> client: on the status socket, the child's pid (4 bytes), and
                    later its exit code (4 bytes, signed), once reaped.
The client's sentinel is its end of the status socket; signals go to a pidfd
of the child. When the client's end of the server socket closes (the client
exited), the server exits.

All these sockets are blocking, whatever socket.setdefaulttimeout() says: a
program's default timeout is not a deadline for starting its children.
A forked child closes every fd the server holds (its socket to the client, the
status sockets and pidfds of the other children), so each child starts with
the same few fds however many are running.
"""

import io
import os
import signal
import socket
import struct
import sys
import threading

from multiprocessing import context as _mp_context
from multiprocessing import util as _mp_util

from . import _cproc
from . import reduction
from . import spawn

__all__ = ["ForkServer", "Popen", "main"]

_INT = struct.Struct("i")
MAXFDS_TO_SEND = 256               # as multiprocessing.forkserver
_inherited_fds = None              # in a child: the fds its request carried


def _socketpair():
    """A connected pair of blocking sockets (not the default timeout's)."""
    pair = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for sock in pair:
        sock.setblocking(True)
    return pair


def _read_int(sock):
    data = b""
    while len(data) < _INT.size:
        chunk = sock.recv(_INT.size - len(data))
        if not chunk:
            raise EOFError("unexpected EOF from the forkserver")
        data += chunk
    return _INT.unpack(data)[0]


_ON_ERROR = ("ignore", "warn", "fail")


class ForkServer:
    """The client side: starts the server on first use, one per process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._sock = None
        self._server = None
        self._pid = None
        self._preload = ["__main__"]   # as multiprocessing: children skip re-importing it
        self._on_error = "ignore"

    def set_forkserver_preload(self, modules_names, *, on_error="ignore"):
        """Set list of module names to try to load in forkserver process.

        The checks and messages are multiprocessing 3.15's (its on_error
        keyword included), on every supported version."""
        if not all(type(mod) is str for mod in modules_names):
            raise TypeError("module_names must be a list of strings")
        if on_error not in _ON_ERROR:
            raise ValueError("on_error must be 'ignore', 'warn', or 'fail'")
        self._preload = list(modules_names)
        self._on_error = on_error

    @property
    def _forkserver_pid(self):
        """multiprocessing's name: the server's pid (None before it starts)."""
        return None if self._server is None else self._server.pid

    def ensure_running(self):
        """multiprocessing's name: start the server unless it is running."""
        with self._lock:
            self._ensure_running()

    def _ensure_running(self):
        if self._sock is not None and self._pid == os.getpid():
            if self._server.poll() is None:
                return
            # The server died (killed, say): reap it and start another, as
            # multiprocessing's client does. Its children live on.
            self._sock.close()
            self._sock = None
        # A forked child does not share its parent's server: it starts its own.
        client, server = _socketpair()
        try:
            main_path = None
            if "__main__" in self._preload:
                data = spawn.get_preparation_data("ignore")
                main_path = data.get("init_main_from_path")
                sys_path = data.get("sys_path")
            prog = ("from cproc.forkserver import main; main(%d, %r, %r, %r, %r)"
                    % (server.fileno(), self._preload, main_path,
                       sys_path if main_path else None, self._on_error))
            argv = [spawn.get_executable()] + _mp_util._args_from_interpreter_flags() + ["-c", prog]
            popen = _cproc.Popen()
            popen._launch_spawn(spawn.get_executable(), argv, [server.fileno()])
        except BaseException:
            client.close()
            raise
        finally:
            server.close()
        if self._pid is None:
            # After multiprocessing's exit handler has joined the children
            # (negative priority: it runs last), not before as atexit would.
            _mp_util.Finalize(self, ForkServer._stop, (self,), exitpriority=-100)
        self._sock, self._server, self._pid = client, popen, os.getpid()

    def _stop(self):
        """At exit: closing our end makes the server exit; reap it if it is ours."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        if self._server is not None and self._pid == os.getpid():
            self._server.wait(timeout=1.0)
        self._server = None

    def request(self, payload, fds=()):
        """Start a child from payload, handing it fds; return (pid, status socket)."""
        with self._lock:
            self._ensure_running()
            status_client, status_child = _socketpair()
            r, w = os.pipe()
            try:
                socket.send_fds(self._sock, [b"F"], [r, status_child.fileno()] + list(fds))
            finally:
                os.close(r)
                status_child.close()
            with open(w, "wb", closefd=True) as f:
                f.write(payload)
            try:
                pid = _read_int(status_client)
            except BaseException as e:
                status_client.close()
                if isinstance(e, EOFError) and hasattr(e, "add_note"):
                    # as multiprocessing 3.15 says it (a preload with on_error='fail', say)
                    e.add_note("Forkserver process may have crashed: see its error output")
                raise
        return pid, status_client


_forkserver = ForkServer()


class Popen:
    """The Process engine for forkserver children (same interface as _cproc.Popen)."""

    method = "forkserver"

    class DupFd:
        """An fd the request carries to the child (duplicate_for_child's index)."""

        def __init__(self, ind):
            self.ind = ind

        def detach(self):
            return _inherited_fds[self.ind]

    def __init__(self, process_obj):
        self._fds = []
        self.returncode = None
        self._pidfd = self._status = None
        _mp_util._flush_std_streams()   # nothing buffered may come out after the child's output
        prep_data = spawn.get_preparation_data(process_obj._name)
        spawn.pass_resource_tracker(self, prep_data)
        fp = io.BytesIO()
        _mp_context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, fp)
            # plain pickle, or cloudpickle for what it refuses (lambdas,
            # closures, the functions of a __main__ the child cannot import)
            fp.write(spawn.dumps_process_obj(prep_data, process_obj))
        finally:
            _mp_context.set_spawning_popen(None)
        if len(self._fds) > MAXFDS_TO_SEND:
            raise ValueError("too many fds")
        # Released here, whatever happens: an exception's traceback would
        # otherwise keep the view and fp in a reference cycle, and collecting
        # a BytesIO's buffer view crashes Python 3.12.1 (gh-111049).
        with fp.getbuffer() as payload:
            self.pid, self._status = _forkserver.request(payload, self._fds)
        self.sentinel = self._status.fileno()
        try:
            self._pidfd = _cproc.pidfd_open(self.pid)
        except OSError:
            self._pidfd = None     # it already exited and was reaped

    def duplicate_for_child(self, fd):
        self._fds.append(fd)
        return len(self._fds) - 1

    def poll(self, flag=os.WNOHANG):
        if self.returncode is None:
            timeout = 0 if flag & os.WNOHANG else None
            if not _cproc.wait_fds([self.sentinel], timeout):
                return None
            try:
                self.returncode = _read_int(self._status)
            except (OSError, EOFError):
                self.returncode = 255   # the server died: status unknown
        return self.returncode

    def wait(self, timeout=None):
        if self.returncode is None:
            if not _cproc.wait_fds([self.sentinel], timeout):
                return None
            return self.poll(os.WNOHANG)
        return self.returncode

    def _send_signal(self, sig):
        if self.returncode is None and self._pidfd is not None:
            _cproc.pidfd_send_signal(self._pidfd, sig)

    def terminate(self):
        self._send_signal(15)

    def kill(self):
        self._send_signal(9)

    def interrupt(self):
        self._send_signal(2)

    def close(self):
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        if self._status is not None:
            self._status.close()
            self._status = None

    def __del__(self):
        self.close()


# ---- the server ---------------------------------------------------------------

class _Child:
    """What the server forks: reads its Process from the payload pipe and runs it."""

    def __init__(self, payload_fd, close_fds, inherited_fds=()):
        self.payload_fd = payload_fd
        self.close_fds = close_fds
        self.inherited_fds = list(inherited_fds)

    def _bootstrap(self, parent_sentinel=None):
        for fd in self.close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if parent_sentinel is not None:
            os.close(parent_sentinel)   # the server is not the process's parent to watch
        signal.signal(signal.SIGINT, signal.default_int_handler)
        global _inherited_fds
        _inherited_fds = self.inherited_fds
        try:
            spawn.spawn_main(self.payload_fd)   # exits through SystemExit
        except SystemExit as e:
            return e.code if isinstance(e.code, int) else 1
        return 0


def _preload_failed(on_error, what, exc):
    """A preload import raised exc: as multiprocessing 3.15's on_error says."""
    if on_error == "fail":
        raise exc
    if on_error == "warn":
        import warnings
        warnings.warn(f"Failed to preload {what}: {exc!r}", ImportWarning, stacklevel=2)
        sys.stderr.flush()


def main(sock_fd, preload, main_path=None, sys_path=None, on_error="ignore"):
    """Entry point of the server process."""
    if sys_path is not None:
        sys.path[:] = sys_path
    if main_path is not None:
        from multiprocessing import process as _mp_process
        _mp_process.current_process()._inheriting = True
        try:
            spawn.import_main_path(main_path)   # as __mp_main__, guarded code does not run
        except Exception as e:
            # 'ignore': each child will import it itself, and report what fails
            _preload_failed(on_error, f"__main__ from {main_path!r}", e)
        finally:
            del _mp_process.current_process()._inheriting
    for name in preload:
        if name == "__main__":
            continue
        try:
            __import__(name)
        except ImportError as e:
            _preload_failed(on_error, f"module {name!r}", e)
    # As multiprocessing's server: protected from ^C (a terminal's SIGINT
    # reaches the whole process group); its children get Python's handler back.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with socket.socket(fileno=sock_fd) as sock:
        sock.setblocking(True)   # a preloaded module may have set a default timeout
        _serve(sock)


def _serve(sock):
    children = {}    # pidfd -> (Popen, status socket)
    while True:
        fds = [sock.fileno()] + list(children)
        for fd in _cproc.wait_fds(fds, None):
            if fd == sock.fileno():
                try:
                    msg, received, _flags, _addr = socket.recv_fds(sock, 1, 2 + MAXFDS_TO_SEND)
                except OSError:
                    msg = b""
                if not msg:            # the client is gone
                    for popen, status in children.values():
                        status.close()
                    return
                payload_fd, status_fd, *inherited = received
                status = socket.socket(fileno=status_fd)
                status.setblocking(True)
                # the server's own fds: the child needs none of them
                server_fds = ([sock.fileno(), status_fd] + list(children)
                              + [s.fileno() for _, s in children.values()])
                popen = _cproc.Popen()
                popen._launch_fork(_Child(payload_fd, server_fds, inherited))
                os.close(payload_fd)
                for fd in inherited:
                    os.close(fd)
                try:
                    status.sendall(_INT.pack(popen.pid))
                except OSError:
                    pass               # the client gave up on it (as multiprocessing's server)
                children[popen.sentinel] = (popen, status)
            else:
                popen, status = children.pop(fd)
                code = popen.poll()
                try:
                    status.sendall(_INT.pack(code if code is not None else 255))
                except OSError:
                    pass               # the client closed it
                status.close()
                popen.close()
