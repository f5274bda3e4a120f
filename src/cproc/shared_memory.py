"""Shared memory blocks, as multiprocessing.shared_memory, that clean up after themselves.

``SharedMemory`` and ``ShareableList`` are multiprocessing's (subclasses of
its classes, the same POSIX names in /dev/shm and the same bytes, so a block
made by either module attaches under the other), with one change: cproc does
not use multiprocessing's resource tracker.  Instead:

* A block created with ``track=True`` (the default) is registered with cproc's
  watcher process (``_shm_watcher.py``, one per program, started on the first
  such block), which unlinks it once no process uses it any more: every cproc
  process that created or attached it (through the same watcher: the creator
  and the processes forked from it or from one another) has exited — however,
  SIGKILL included — and no process has it open or mapped.
* Attaching never unlinks and never warns.  A cproc process holds a shared
  ``flock`` on the block's fd while it has it open, so no watcher unlinks it
  under it.
* ``track=False`` at creation keeps the block: it stays in /dev/shm until
  someone calls ``unlink()`` (as 3.13's ``track=False``).
"""

import errno
import fcntl
import mmap
import os
import socket
import struct
import subprocess
import threading
import types

import _posixshmem
import multiprocessing.shared_memory as _mps

__all__ = ["SharedMemory", "ShareableList"]

_O_CREX = os.O_CREAT | os.O_EXCL
_shm_open = _posixshmem.shm_open
_shm_unlink = _posixshmem.shm_unlink
_flock = fcntl.flock
_LOCK_SH = fcntl.LOCK_SH
# a record: kind, inode, pid, length of the name; then the name (see _shm_watcher.py)
_REC = struct.Struct("=cQiH")
_WATCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_shm_watcher.py")
_MAX_PENDING = 2048  # bytes of U records held back before they are sent on their own
                     # (a write to the pipe stays under PIPE_BUF: records never mix)

_lock = threading.Lock()
_sock = None        # this program's connection to its watcher (pidfds), inherited by forked children
_wfd = -1           # the write end of its record pipe, inherited likewise
_pid = os.getpid()
_pidfd_sent = False  # this process has given the watcher a pidfd of itself over _sock
_told = {}          # name -> inode of the blocks this process registered (R or A) with it
_pending = []       # U records not sent yet (they go with the next message)
_pending_size = 0


def _after_fork_in_child():
    global _lock, _pid, _pidfd_sent, _told, _pending, _pending_size
    _lock = threading.Lock()
    _pid = os.getpid()
    _pidfd_sent = False
    _told = {}
    _pending, _pending_size = [], 0   # the parent sends them


os.register_at_fork(after_in_child=_after_fork_in_child)


def _start_watcher():
    """A new watcher: (our end of its socket, the write end of its record pipe)."""
    from .spawn import get_executable
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    rfd, wfd = os.pipe2(os.O_CLOEXEC)
    try:
        # the script forks the watcher and exits: run() reaps that first process
        subprocess.run([get_executable(), "-I", "-S", _WATCHER, str(theirs.fileno()), str(rfd)],
                       pass_fds=(theirs.fileno(), rfd), stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    except BaseException:
        ours.close()
        os.close(wfd)
        raise
    finally:
        theirs.close()
        os.close(rfd)
    return ours, wfd


def _tell(kind, ino, name, start=False):
    """Tell the watcher that this process created (kind R) or attached (A)
    the block, or unlinked it (U).

    R starts the watcher if there is none; without a watcher, A and U are
    dropped (nothing to tell).  An A for a block this process already
    registered is not sent: the watcher counts processes, not handles.  U is
    only bookkeeping for the watcher (a block whose name is gone or names
    another inode is forgotten anyway), so U records wait and go with the
    next message.  Records go through a pipe (one write, atomic); a
    process's first message is preceded by a pidfd of it on the socket,
    which the watcher reads before the records that follow.
    """
    global _sock, _wfd, _pidfd_sent, _told, _pending, _pending_size
    raw = name.encode() if name.isascii() else os.fsencode(name)
    rec = _REC.pack(kind, ino, _pid, len(raw)) + raw
    with _lock:
        if kind == b"U":
            _told.pop(name, None)
            if _sock is None:
                return
            _pending.append(rec)
            _pending_size += len(rec)
            if _pending_size < _MAX_PENDING:
                return
            rec = b""
        elif _told.get(name) == ino:
            return
        while True:
            if _sock is None:
                if not start:
                    _pending, _pending_size = [], 0
                    return
                _sock, _wfd = _start_watcher()
                _pidfd_sent = False
                _told = {}
                _pending, _pending_size = [], 0
                start = False
            try:
                if not _pidfd_sent:
                    pidfd = os.pidfd_open(_pid)
                    try:
                        socket.send_fds(_sock, [b"P"], [pidfd])
                    finally:
                        os.close(pidfd)
                    _pidfd_sent = True
                os.write(_wfd, b"".join(_pending) + rec if _pending else rec)
            except (BrokenPipeError, ConnectionResetError, ConnectionRefusedError):
                _sock.close()       # the watcher is gone (killed): a new one, once
                os.close(_wfd)
                _sock, _wfd = None, -1
                continue
            _pending, _pending_size = [], 0
            if kind != b"U":
                _told[name] = ino
            return


class SharedMemory(_mps.SharedMemory):
    """Creates a new shared memory block or attaches to an existing
    shared memory block.

    Every shared memory block is assigned a unique name.  This enables
    one process to create a shared memory block with a particular name
    so that a different process can attach to that same shared memory
    block using that same name.

    cproc: a block created with track=True (the default) is unlinked by
    cproc's watcher once every process of this program that created or
    attached it has exited and no process has it open or mapped; attaching
    never unlinks it.  track=False at creation keeps the block until unlink()."""

    _ino = 0
    _track = True

    def __init__(self, name=None, create=False, size=0, *, track=True):
        if not size >= 0:
            raise ValueError("'size' must be a positive integer")
        if create:
            self._flags = flags = _O_CREX | os.O_RDWR
            if size == 0:
                raise ValueError("'size' must be a positive number different from zero")
        else:
            flags = self._flags
        if name is None and not flags & os.O_EXCL:
            raise ValueError("'name' can only be None if create=True")
        self._track = track
        if name is None:
            while True:
                name = _mps._make_filename()
                try:
                    fd = _shm_open(name, flags, mode=self._mode)
                except FileExistsError:
                    continue
                break
        else:
            name = "/" + name
            fd = _shm_open(name, flags, mode=self._mode)
        self._fd = fd
        self._name = name
        try:
            if create:
                os.ftruncate(fd, size)
            # held while this process has the block open: no watcher unlinks it
            _flock(fd, _LOCK_SH)
            stats = os.fstat(fd)
            if stats.st_nlink == 0:
                # unlinked between our open and our lock
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)
            self._ino = ino = stats.st_ino
            size = stats.st_size
            self._mmap = mmap.mmap(fd, size)
        except OSError:
            if create:
                _shm_unlink(name)
            self.close()
            raise
        if track:
            _tell(b"R" if create else b"A", ino, name, start=create)
        self._size = size
        self._buf = memoryview(self._mmap)

    def unlink(self):
        """Requests that the underlying shared memory block be destroyed.

        In order to ensure proper cleanup of resources, unlink should be
        called once (and only once) across all processes which have access
        to the shared memory block."""
        if self._name:
            _shm_unlink(self._name)
            if self._track:
                _tell(b"U", self._ino, self._name)


def _rebound(func, **names):
    """func with its module's globals but for names: multiprocessing's own
    code (whatever the running version's is) using cproc's classes."""
    new = types.FunctionType(func.__code__, dict(func.__globals__, **names),
                             func.__name__, func.__defaults__, func.__closure__)
    new.__kwdefaults__ = func.__kwdefaults__
    new.__qualname__ = func.__qualname__
    new.__doc__ = func.__doc__
    return new


class ShareableList(_mps.ShareableList):
    __doc__ = _mps.ShareableList.__doc__
    # multiprocessing's __init__, creating and attaching cproc's SharedMemory
    __init__ = _rebound(_mps.ShareableList.__init__, SharedMemory=SharedMemory)
