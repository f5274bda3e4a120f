"""A process blocked in a wait uses no measurable CPU (issue 15).

A forked child blocks in Queue.get(), Connection.recv(), Event.wait(),
Lock.acquire(), Condition.wait() or Semaphore.acquire(). Once it is asleep
(/proc/<pid>/stat says 'S' after it announced the call), its CPU time
(utime + stime, in clock ticks) is read, the parent lets about a second pass,
reads it again, and only then releases the child. A waiter that spins, or
wakes up often, shows up here: a spinning one uses the whole second.

Also: the wait policy's count of usable CPUs (one CPU: never spin).
"""

import os
import time

import pytest

from helpers.blocking import proc_state, wait_until
from helpers.children import Child

pytestmark = pytest.mark.timeout(60)

WINDOW = 1.0                                  # seconds the child stays blocked
TICK = 1.0 / os.sysconf("SC_CLK_TCK")
ALLOWED = 2 * TICK                            # "no measurable CPU": at most 2 ticks


def cpu_seconds(pid):
    """utime + stime of process pid (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) * TICK   # fields 14 and 15 of proc(5)


def _blocked_child(ready_w, wait):
    os.write(ready_w, b"r")            # about to block
    os.close(ready_w)
    return wait()


# Each scenario: setup(mp) -> (wait() for the child, release() for the parent, expected result)

def queue_get(mp):
    q = mp.Queue()
    return q.get, lambda: q.put("item"), "item"


def connection_recv(mp):
    a, b = mp.Pipe()
    return b.recv, lambda: a.send("msg"), "msg"


def event_wait(mp):
    e = mp.Event()
    return e.wait, e.set, True


def lock_acquire(mp):
    lock = mp.Lock()
    lock.acquire()                      # the parent holds it; the child waits
    return lock.acquire, lock.release, True


def condition_wait(mp):
    cond = mp.Condition()

    def wait():
        with cond:
            return cond.wait()

    def release():
        with cond:
            cond.notify()

    return wait, release, True


def semaphore_acquire(mp):
    sem = mp.Semaphore(0)
    return sem.acquire, sem.release, True


SCENARIOS = [queue_get, connection_recv, event_wait, lock_acquire, condition_wait,
             semaphore_acquire]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_blocked_waiter_uses_no_cpu(mp, scenario):
    wait, release, expected = scenario(mp)
    ready_r, ready_w = os.pipe()
    child = Child(_blocked_child, ready_w, wait)
    released = False
    try:
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"r"
        assert wait_until(lambda: proc_state(child.pid) == "S", 10.0), \
            f"the child stayed in state {proc_state(child.pid)!r}"
        before = cpu_seconds(child.pid)
        time.sleep(WINDOW)
        after = cpu_seconds(child.pid)
        assert not child.reported(), "the wait returned before it was released"
        # (a waiter may wake briefly to run signal handlers: it sleeps again)
        assert wait_until(lambda: proc_state(child.pid) == "S", 10.0)
        release()
        released = True
        assert child.result() == expected
        assert after - before <= ALLOWED, \
            f"a blocked {scenario.__name__} used {after - before:.3f} s of CPU in {WINDOW} s"
    finally:
        os.close(ready_r)
        if not released:
            release()
        child.close()


# --------------------------------------------------------------------------
# The wait policy's count of usable CPUs (csrc/spin.c): a process that
# starts on one CPU never busy-spins; a forked child keeps its parent's count
# (pinning each process to a CPU of its own is when spinning pays most).

def _usable_cpus_of_fresh_interpreter(pin):
    import subprocess
    import sys
    code = ("import os\n"
            f"if {pin!r}: os.sched_setaffinity(0, {{min(os.sched_getaffinity(0))}})\n"
            "import cproc._cproc as c\n"
            "print(c._usable_cpus())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True)
    return int(out.stdout)


def test_one_usable_cpu_means_no_spin(cproc):
    assert _usable_cpus_of_fresh_interpreter(pin=True) == 1
    assert 1 <= _usable_cpus_of_fresh_interpreter(pin=False) <= len(os.sched_getaffinity(0))


def test_fork_child_keeps_the_parents_cpu_count(cproc):
    from cproc import _cproc
    parent_count = _cproc._usable_cpus()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
            os.write(w, str(_cproc._usable_cpus()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            got = f.read()
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert int(got) == parent_count
