"""cproc's shared-memory watcher: unlinks a tracked block once nobody uses it.

Run by cproc.shared_memory as ``python -I -S _shm_watcher.py SOCK PIPE`` (standard
library only, not imported as part of cproc).  The script forks and its first
process exits at once, so the watcher is nobody's child; it starts a session
of its own (a Ctrl+C or a kill of the user's process group does not reach it)
and ignores SIGINT and SIGTERM, as multiprocessing's resource tracker does.

SOCK and PIPE: its end of a SOCK_SEQPACKET socket pair and the read end of a
pipe; every process of the program that started it holds the other ends
(forked children inherit them).  The pipe carries records ``kind + ino +
pid + len(name) + name`` (each write a whole number of them, under
PIPE_BUF, so writers never mix):

* ``R``: process pid created the block /dev/shm<name> (inode ino) and asks
  for it to be tracked;
* ``A``: process pid attached it (counted only if the block is tracked here:
  a kept block stays kept);
* ``U``: a process unlinked it, forget it.

Before its first record a process sends a pidfd of itself on the socket
(SCM_RIGHTS): the watcher watches that pid from then on.  The watcher reads
the pipe first, then the socket, then handles the records: the pidfd of
every record's process is then in hand (it was sent before the record was
written), or that process has exited.

A block is unlinked when (1) every process that registered it has exited
(its pidfd is readable), (2) no process has it open through cproc (each cproc
SharedMemory holds a shared flock on its fd until close(): the watcher's
exclusive LOCK_NB attempt fails while one does), and (3) no process maps it
(/proc/<pid>/maps: multiprocessing's SharedMemory, say).  If (2) or (3) fail,
it looks again later (20 ms, doubling up to 1 s).  It never unlinks a name
that now names another inode.  It exits once every client end is closed (all
the program's processes exited) and it has no block left.
"""

import errno
import fcntl
import os
import select
import signal
import socket
import struct
import sys
import time

SHM_DIR = "/dev/shm"
FIRST_DELAY, MAX_DELAY = 0.02, 1.0
BATCH = 0.002       # after reading messages, the time before polling the socket again
_REC = struct.Struct("=cQiH")


def _mapped(path, ino):
    """True if some process maps the inode ino at path."""
    needle = path.encode()
    ino_b = str(ino).encode()
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                data = f.read()
        except OSError:
            continue
        if needle not in data:
            continue
        for line in data.splitlines():
            fields = line.split(None, 5)
            if len(fields) == 6 and fields[4] == ino_b and fields[5].startswith(needle):
                return True
    return False


class Watcher:
    def __init__(self, sock, pipe):
        self.sock = sock
        self.pipe = pipe
        self.buf = b""       # pipe bytes not yet a whole record
        self.blocks = {}     # name -> [ino, set of pids, due time or None, delay]
        self.pidfds = {}     # pid -> pidfd
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.poller.register(pipe, select.POLLIN)

    # -- messages

    def receive(self):
        """Take the pidfds waiting on the socket; False once every client end is closed."""
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.sock, 16, 1)
            except InterruptedError:
                continue
            except BlockingIOError:
                return True
            if not msg:
                return False
            for fd in fds[1:]:
                os.close(fd)
            if fds:
                self.adopt(fds[0])

    def read_records(self):
        """Read what the pipe holds (False at its end), then handle the
        whole records, once the socket's pidfds are taken."""
        more = True
        while True:
            try:
                data = os.read(self.pipe, 65536)
            except InterruptedError:
                continue
            except BlockingIOError:
                break
            if not data:
                more = False
                break
            self.buf += data
        connected = self.receive()
        buf, at = self.buf, 0
        while at + _REC.size <= len(buf):
            kind, ino, pid, size = _REC.unpack_from(buf, at)
            if at + _REC.size + size > len(buf):
                break
            name = buf[at + _REC.size:at + _REC.size + size].decode(errors="surrogateescape")
            at += _REC.size + size
            self.record(kind, ino, pid, name)
        self.buf = buf[at:]
        return more and connected

    def record(self, kind, ino, pid, name):
        block = self.blocks.get(name)
        if kind == b"U":
            if block is not None and block[0] == ino:
                self.forget(name)
            return
        if block is None or block[0] != ino:
            if kind != b"R":      # not ours to track (kept, or another program's)
                return
            block = self.blocks[name] = [ino, set(), None, FIRST_DELAY]
        if pid in self.pidfds:
            block[1].add(pid)
        elif not block[1]:        # that process has exited already
            self.schedule(block, 0.0)

    def adopt(self, pidfd):
        """Watch the process behind pidfd (unless it already exited)."""
        try:
            with open(f"/proc/self/fdinfo/{pidfd}") as f:
                pid = next(int(line.split()[1]) for line in f if line.startswith("Pid:"))
        except (OSError, StopIteration, ValueError, IndexError):
            pid = -1
        old = self.pidfds.get(pid)
        if old is not None and select.select([old], [], [], 0)[0]:
            self.exited(old)          # an earlier process of that pid, gone
            old = None
        if pid <= 0 or old is not None:
            os.close(pidfd)
            return
        self.pidfds[pid] = pidfd
        self.poller.register(pidfd, select.POLLIN)

    def exited(self, pidfd):
        pid = next(p for p, fd in self.pidfds.items() if fd == pidfd)
        del self.pidfds[pid]
        self.poller.unregister(pidfd)
        os.close(pidfd)
        for block in self.blocks.values():
            if pid in block[1]:
                block[1].discard(pid)
                if not block[1]:
                    block[3] = FIRST_DELAY
                    self.schedule(block, 0.0)

    def schedule(self, block, delay):
        block[2] = time.monotonic() + delay

    def forget(self, name):
        del self.blocks[name]

    # -- unlinking

    def check(self, name):
        ino, pids, _due, delay = block = self.blocks[name]
        block[2] = None
        path = SHM_DIR + name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            return self.forget(name)          # gone (unlinked by someone)
        try:
            if os.fstat(fd).st_ino != ino:
                return self.forget(name)      # the name was reused: not ours
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                busy = True                   # open in a cproc process
            else:
                busy = _mapped(path, ino)
            if busy:
                block[3] = min(delay * 2, MAX_DELAY)
                return self.schedule(block, delay)
            try:
                if os.stat(path).st_ino == ino:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            self.forget(name)
        finally:
            os.close(fd)

    def run(self):
        connected = True
        while connected or self.blocks:
            now = time.monotonic()
            for name in [n for n, b in self.blocks.items() if b[2] is not None and b[2] <= now]:
                if not self.blocks[name][1]:
                    self.check(name)
            if not connected and not self.blocks:
                break
            dues = [b[2] for b in self.blocks.values() if b[2] is not None]
            timeout = None if not dues else max(0, int((min(dues) - time.monotonic()) * 1000) + 1)
            received = False
            events = self.poller.poll(timeout)
            exits = set(self.pidfds.values())
            for fd, _ev in events:      # first: reading may close and reuse pidfd numbers
                if fd in exits:
                    self.exited(fd)
            if connected and any(fd in (self.pipe, self.sock.fileno()) for fd, _ev in events):
                received = True
                if not self.read_records():
                    connected = False
                    self.poller.unregister(self.sock)
                    self.poller.unregister(self.pipe)
            if received and connected:
                # Messages are news, not requests: nobody waits for an answer,
                # and the socket keeps what is sent meanwhile.  Not polling
                # it for a moment saves a client creating blocks in a loop a
                # wake-up of this process per block.
                time.sleep(BATCH)


def main():
    fd, pipe = int(sys.argv[1]), int(sys.argv[2])
    if os.fork():
        os._exit(0)              # the starter reaps this first process at once
    os.setsid()
    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    os.set_blocking(pipe, False)
    Watcher(sock, pipe).run()


if __name__ == "__main__":
    main()
