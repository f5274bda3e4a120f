"""What a process holds, read from /proc: fds, mappings, /dev/shm entries,
TCP peers, the processes of a session (the leak check in conftest.py and the
tests that count resources)."""

import os
import time


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
