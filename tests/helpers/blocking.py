"""Waiting on state, not on the clock.

wait_until polls a predicate.  wait_blocked waits until threads of this
process, or processes, are actually asleep in the kernel in a blocking call
(read from /proc/<pid>/task/<tid>/{stat,wchan,syscall}): a test that then
asserts "still blocked" has exercised the blocking path, instead of hoping
that 0.3 s was enough to reach it.
"""

import os
import platform
import time

# futex(2)'s syscall number on this machine, and the flag of a process-private
# futex operation (linux/futex.h)
_FUTEX_NR = {"x86_64": "202", "aarch64": "98", "riscv64": "98", "ppc64le": "221", "s390x": "238"}.get(
    platform.machine())
_FUTEX_PRIVATE_FLAG = 128


def wait_until(predicate, timeout=10.0, interval=0.005):
    """Poll predicate until it is true or timeout passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def proc_state(pid, tid=None):
    """The one-letter state ('R', 'S', 'T', 'Z', ...) of process pid (its
    thread tid if given), from /proc; None once it is gone."""
    stat = _read(f"/proc/{pid}/task/{tid}/stat" if tid else f"/proc/{pid}/stat")
    if stat is None:
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def pid_gone(pid):
    """True once pid no longer names a running process (gone, or a zombie)."""
    return proc_state(pid) in (None, "Z", "X")


def blocked_in(pid, tid=None):
    """Where thread tid of process pid (its main thread by default) sleeps in
    a blocking call: its kernel wait channel ('futex_wait_queue', 'pipe_read',
    'do_sys_poll', 'do_wait', ...), or None while it is not so asleep (running,
    runnable, stopped, gone, or waiting on a process-private futex).

    A Python thread waiting for the GIL sleeps on a private futex (so does one
    blocked in a threading lock); the primitives under test are shared
    between processes and wait on shared futexes, pipes or poll.  Not counting
    private futexes is what tells a thread that got into its call from one
    that has not got the GIL yet (or got out and wants it back)."""
    task = f"/proc/{pid}/task/{tid or pid}"
    if proc_state(pid, tid or pid) != "S":
        return None
    syscall = (_read(task + "/syscall") or "").split()
    if len(syscall) > 2 and syscall[0] == _FUTEX_NR and int(syscall[2], 16) & _FUTEX_PRIVATE_FLAG:
        return None
    wchan = (_read(task + "/wchan") or "").strip()
    return wchan or "?"


def _task_of(target):
    """(pid, tid, is_alive, label) for a thread of this process (a
    threading.Thread or a ThreadTask), a pid, or an object with .pid (Child,
    Remote, subprocess.Popen, a Process)."""
    thread = getattr(target, "thread", target)
    if hasattr(thread, "native_id"):
        return os.getpid(), thread.native_id, thread.is_alive, f"thread {thread.name}"
    pid = target if isinstance(target, int) else target.pid
    return pid, None, lambda: not pid_gone(pid), f"process {pid}"


def wait_blocked(*targets, timeout=10.0, wchan=None, settle=3, interval=0.005):
    """Wait until every target (see _task_of) sleeps in a blocking call
    (blocked_in; with wchan, one whose wait channel contains it, e.g. "futex")
    on `settle` samples in a row, `interval` s apart (this thread releases the
    GIL in between).  Fails the test if a target ends instead, or does not
    block within timeout."""
    tasks = [_task_of(t) for t in targets]
    deadline = time.monotonic() + timeout
    for pid, tid, is_alive, label in tasks:
        seen = 0
        while seen < settle:
            if not is_alive():
                raise AssertionError(f"{label} ended instead of blocking")
            where = blocked_in(pid, tid)
            seen = seen + 1 if where and (wchan is None or wchan in where) else 0
            if seen < settle:
                if time.monotonic() >= deadline:
                    raise AssertionError(f"{label} did not block within {timeout}s "
                                         f"(state {proc_state(pid, tid)!r}, wchan {where!r})")
                time.sleep(interval)
