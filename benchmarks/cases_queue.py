"""Benchmarks for issue 4 (part): Queue, and Event between processes.

Every case forks its helper children with os.fork, the same process machinery
for every implementation, so only the queue (or Event) differs. The children
are started and warmed up before the clock starts: each consumer gets one
warm-up message through the queue under test and then reports "ready" on a
plain os.pipe; a producer puts its warm-up message first (multiprocessing's
feeder thread starts there). The clock stops when the parent learns, again on
a plain os.pipe, that the consumer(s) got the last message; they send their
count and checksum the same way, and the parent raises if they are wrong.
Children leave with os._exit; a producer child first calls close() and
join_thread(), which multiprocessing needs to flush its feeder thread.

The faster-fifo peer uses its own put/get the same way; its get() always has a
timeout (10 s by default), so it gets a long one, and its buffer is sized to
hold every message of a run so that put() never waits for room. The batch
case (report only) uses put_many/get_many where the queue has them (cproc,
faster-fifo) and put/get per message for multiprocessing, which has none.

The Event case plays ping-pong with two Events between the parent and one
forked child; each side clears the Event it waited on before setting the
other, so the protocol is race-free for any correct Event.
"""

import functools
import os
import signal
from time import perf_counter

from harness import Peer, case, fork_child

ORDER = 40

WARM = ("warm", -1)
LONG = 3600.0          # faster-fifo's get() timeout: "block"


# --------------------------------------------------------------------------
# Forked children, reporting to the parent on plain pipes


class _Children:
    """Forks children that report to the parent on os.pipes.

    ``fork(body)`` runs ``body(report)`` in a child, ``report(bytes)`` writing
    to that child's pipe; the parent reads it with ``read(fd)``. Children may
    block on ``wait_go()`` until the parent calls ``go()``. On leaving the
    ``with`` block normally the children are reaped and any failure raises;
    on an error (or a timeout) they are killed.
    """

    def __init__(self):
        self.pids = []
        self.fds = []
        self.go_r, self.go_w = os.pipe()

    def __enter__(self):
        return self

    def fork(self, body):
        r, w = os.pipe()
        pid = fork_child(lambda: body(lambda data: os.write(w, data)), close=(r, self.go_w))
        os.close(w)
        self.pids.append(pid)
        self.fds.append(r)
        return r

    def wait_go(self):  # in a child: returns at go() (EOF on the go pipe)
        os.read(self.go_r, 1)

    def go(self):
        if self.go_w >= 0:
            os.close(self.go_w)
            self.go_w = -1

    def read(self, fd):
        data = os.read(fd, 4096)   # children write each report in one write
        if not data:
            raise RuntimeError("benchmark child exited without reporting")
        return data

    def ready(self, fds):
        for fd in fds:
            if self.read(fd) != b"r":
                raise RuntimeError("benchmark child sent a bad ready signal")

    def __exit__(self, exc_type, exc, tb):
        for fd in self.fds + [self.go_r, self.go_w]:
            if fd >= 0:
                os.close(fd)
        self.go_w = -1
        failed = []
        for pid in self.pids:
            if exc_type is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed.append(status)
        if failed and exc_type is None:
            raise RuntimeError(f"benchmark child failed (wait status "
                               f"{failed[0]:#x})")
        return False


def _close(q, ok=True):
    """Release a queue outside the timed region (ends multiprocessing's
    feeder thread). After an error the consumer may be gone with messages
    still buffered: then do not wait for multiprocessing's feeder thread."""
    if not ok:
        cancel = getattr(q, "cancel_join_thread", None)
        if cancel is not None:
            cancel()
    close = getattr(q, "close", None)
    if close is not None:
        close()
    join = getattr(q, "join_thread", None)
    if join is not None:
        join()


def _ff_queue(mod, capacity):
    return mod.Queue(max_size_bytes=max(1 << 20, capacity))


def _check_report(report, expected):
    got = tuple(int(x) for x in report.split())
    if got != expected:
        raise AssertionError(f"consumer reported (count, checksum) {got}, "
                             f"expected {expected}")


# --------------------------------------------------------------------------
# 1 producer (the parent), 1 consumer (a child)


def _one_to_one(q, get, produce, consume):
    """Fork a consumer that gets WARM, says ready, then returns consume(get)
    as its report; time produce() in the parent until that report arrives."""
    ok = False
    try:
        with _Children() as kids:
            def child(report):
                if get() != WARM:
                    raise AssertionError("first message is not the warm-up")
                report(b"r")
                report(consume(get))

            fd = kids.fork(child)
            q.put(WARM)
            kids.ready([fd])
            t0 = perf_counter()
            produce()
            result = kids.read(fd)
            elapsed = perf_counter() - t0
        ok = True
    finally:
        _close(q, ok)
    return elapsed, result


def _small_1p1c(q, get, n):
    put = q.put

    def produce():
        for i in range(n):
            put(("msg", i))

    def consume(get):
        for i in range(n):
            if get()[1] != i:
                raise AssertionError(f"message {i} out of order")
        return b"%d %d" % (n, n)

    elapsed, report = _one_to_one(q, get, produce, consume)
    _check_report(report, (n, n))
    return elapsed


def ff_small_1p1c(mod, n):
    q = _ff_queue(mod, 64 * n)
    return _small_1p1c(q, functools.partial(q.get, True, LONG), n)


@case("Queue small messages, 1 producer 1 consumer", target=0.1,
      size=40_000, quick=10_000,
      work="{size:,} × put(('msg', i)) to a forked get() child",
      peers=[Peer("faster-fifo", "faster_fifo", run=ff_small_1p1c,
                  target=0.7)])
def queue_small_1p1c(mod, n):
    q = mod.Queue()
    return _small_1p1c(q, q.get, n)


MIB = 1 << 20


@case("Queue 1 MiB messages", target=0.2,
      size=150, quick=40,
      work="{size:,} × put(1 MiB bytes) to a forked get() child")
def queue_1mib(mod, n):
    # two payloads, alternating, told apart by their first and last bytes
    payloads = [b"a" + b"x" * (MIB - 2) + b"A", b"b" + b"y" * (MIB - 2) + b"B"]
    q = mod.Queue()
    put = q.put

    def produce():
        for i in range(n):
            put(payloads[i & 1])

    def consume(get):
        obj = None
        for i in range(n):
            obj = get()
            ref = payloads[i & 1]
            if len(obj) != MIB or obj[0] != ref[0] or obj[-1] != ref[-1]:
                raise AssertionError(f"message {i} is wrong")
        if obj != payloads[(n - 1) & 1]:   # and one full comparison
            raise AssertionError("last message differs from what was put")
        return b"%d %d" % (n, n)

    elapsed, report = _one_to_one(q, q.get, produce, consume)
    _check_report(report, (n, n))
    return elapsed


BATCH = 100


def _batched_1p1c(q, get, n, put_many, get_many):
    """put_many/get_many when given, else put/get one item at a time."""
    batches = [[("msg", i) for i in range(b, min(n, b + BATCH))]
               for b in range(0, n, BATCH)]

    if put_many is not None:
        def produce():
            for batch in batches:
                put_many(batch)
    else:
        put = q.put

        def produce():
            for batch in batches:
                for item in batch:
                    put(item)

    def consume(get):
        i = 0
        if get_many is not None:
            while i < n:
                for item in get_many():
                    if item[1] != i:
                        raise AssertionError(f"message {i} out of order")
                    i += 1
        else:
            for i in range(n):
                if get()[1] != i:
                    raise AssertionError(f"message {i} out of order")
            i = n
        return b"%d %d" % (i, n)

    elapsed, report = _one_to_one(q, get, produce, consume)
    _check_report(report, (n, n))
    return elapsed


def ff_batched_1p1c(mod, n):
    q = _ff_queue(mod, 64 * n)
    return _batched_1p1c(q, functools.partial(q.get, True, LONG), n,
                         q.put_many,
                         functools.partial(q.get_many, True, LONG, BATCH))


@case("Queue put_many/get_many small messages, 1P1C", target=None,
      size=40_000, quick=10_000,
      work=f"{{size:,}} messages in batches of {BATCH} (multiprocessing: "
           "put/get each)",
      peers=[Peer("faster-fifo", "faster_fifo", run=ff_batched_1p1c)],
      note="Report only: multiprocessing has no batch API, so its side puts "
           "and gets each message; cproc and faster-fifo use put_many(batch) "
           f"and get_many({BATCH}).")
def queue_batched_1p1c(mod, n):
    q = mod.Queue()
    if hasattr(q, "put_many"):
        return _batched_1p1c(q, q.get, n, q.put_many,
                             functools.partial(q.get_many, BATCH))
    return _batched_1p1c(q, q.get, n, None, None)


# --------------------------------------------------------------------------
# 2 producers, 2 consumers, all forked


@case("Queue small messages, 2 producers 2 consumers", target=0.1,
      size=40_000, quick=10_000,
      work="{size:,} messages, 2 forked producers → 2 forked consumers")
def queue_small_2p2c(mod, n):
    per_producer = n // 2
    q = mod.Queue()
    try:
        with _Children() as kids:
            def producer(p):
                def body(report):
                    put = q.put
                    put(WARM)
                    report(b"r")
                    kids.wait_go()
                    for i in range(per_producer):
                        put((p, i))
                    put(None)         # each consumer stops at its first None
                    q.close()
                    q.join_thread()   # multiprocessing: flush the feeder
                return body

            def consumer(report):
                get = q.get
                if get() != WARM:
                    raise AssertionError("first message is not the warm-up")
                report(b"r")
                kids.wait_go()
                last = [-1, -1]
                count = total = 0
                while True:
                    m = get()
                    if m is None:
                        break
                    p, i = m
                    if i <= last[p]:
                        raise AssertionError(f"producer {p}: {i} after "
                                             f"{last[p]}")
                    last[p] = i
                    count += 1
                    total += i
                report(b"%d %d" % (count, total))

            consumers = [kids.fork(consumer) for _ in range(2)]
            producers = [kids.fork(producer(p)) for p in range(2)]
            kids.ready(consumers + producers)
            t0 = perf_counter()
            kids.go()
            reports = [kids.read(fd) for fd in consumers]
            elapsed = perf_counter() - t0
    finally:
        _close(q)
    got = [tuple(int(x) for x in r.split()) for r in reports]
    count = sum(c for c, _ in got)
    total = sum(t for _, t in got)
    expected = (2 * per_producer, per_producer * (per_producer - 1))
    if (count, total) != expected:
        raise AssertionError(f"consumers got (count, checksum) "
                             f"{(count, total)}, expected {expected}")
    return elapsed


# --------------------------------------------------------------------------
# Event


@case("Event ping-pong between two processes", target=0.2,
      size=5_000, quick=1_000,
      work="{size:,} round trips: set A → child waits, clears A, sets B")
def event_ping_pong(mod, n):
    a, b = mod.Event(), mod.Event()
    with _Children() as kids:
        def child(report):
            # race-free: each side clears the Event it waited on before it
            # sets the other one, so a wait() never sees a stale set()
            for _ in range(n + 1):       # + the untimed first round trip
                a.wait()
                a.clear()
                b.set()
            report(b"%d" % (n + 1))

        fd = kids.fork(child)
        a.set()          # first round trip: the child is up
        b.wait()
        b.clear()
        t0 = perf_counter()
        for _ in range(n):
            a.set()
            b.wait()
            b.clear()
        elapsed = perf_counter() - t0
        if kids.read(fd) != b"%d" % (n + 1):
            raise AssertionError("child did a different number of rounds")
    if a.is_set() or b.is_set():
        raise AssertionError("an Event was left set")
    return elapsed
