"""cproc's public API as users write it: must pass ``mypy --strict``.

Checked by tests/test_typing.py (no reveal_type: the assignments to annotated
variables are the checks). It also runs: ``python tests/typing/usage.py``.
"""

from __future__ import annotations

import ctypes
import queue
from collections.abc import Iterator
from multiprocessing.managers import SyncManager

import cproc
from cproc.connection import Connection, Listener, Client, wait
from cproc.context import BaseContext, SpawnContext
from cproc.pool import AsyncResult, IMapIterator, MapResult, Pool
from cproc.queues import JoinableQueue, Queue, SimpleQueue
from cproc.sharedctypes import Synchronized, SynchronizedArray, SynchronizedString
from cproc.synchronize import Barrier, Condition, Event, Lock, RLock, Semaphore


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def describe(x: int, label: str = "x") -> str:
    return f"{label}={x}"


def fill(q: Queue[int], n: int) -> None:
    for i in range(n):
        q.put(i)


class Worker(cproc.Process):
    def __init__(self, q: Queue[int], counter: Synchronized[int]) -> None:
        super().__init__(daemon=True)
        self.q = q
        self.counter = counter

    def run(self) -> None:
        with self.counter.get_lock():
            self.counter.value += 1
        self.q.put(self.counter.value)


def pools() -> None:
    with cproc.Pool(2) as pool:
        squares: list[int] = pool.map(square, range(10))
        sums: list[int] = pool.starmap(add, [(1, 2), (3, 4)])
        lazy: IMapIterator[int] = pool.imap(square, range(10))
        first: int = lazy.next(timeout=10)
        rest: list[int] = list(lazy)
        chunked: Iterator[int] = pool.imap(square, iter(range(100)), chunksize=8)
        unordered: set[int] = set(pool.imap_unordered(square, range(10)))
        res: AsyncResult[str] = pool.apply_async(describe, (3,), {"label": "n"})
        text: str = res.get(timeout=10)
        ready: bool = res.ready()
        mres: MapResult[int] = pool.map_async(square, [1, 2, 3], callback=lambda out: print(len(out)))
        mapped: list[int] = mres.get()
        direct: int = pool.apply(add, (1, 2))
        print(squares, sums, first, rest, sum(chunked), unordered, text, ready, mapped, direct)
    pool.join()

    ctx: SpawnContext = cproc.get_context("spawn")
    spool: Pool = ctx.Pool(processes=1, maxtasksperchild=10)
    try:
        r: AsyncResult[int] = spool.apply_async(square, (7,))
        try:
            print(r.get(timeout=30))
        except cproc.WorkerLostError as e:
            lost_pid: int | None = e.pid
            lost_code: int | None = e.exitcode
            print(lost_pid, lost_code)
        except cproc.TimeoutError:
            pass
    finally:
        spool.close()
        spool.join()


def queues_and_processes() -> None:
    q: Queue[int] = cproc.Queue()
    counter: Synchronized[int] = cproc.Value("i", 0)
    workers = [Worker(q, counter) for _ in range(2)]
    for w in workers:
        w.start()
    got: list[int] = [q.get(timeout=10) for _ in workers]
    for w in workers:
        w.join()
        code: int | None = w.exitcode
        print(w.name, w.pid, code)

    q.put_many([1, 2, 3])
    batch: list[int] = q.get_many(3, timeout=10)
    try:
        q.get_nowait()
    except queue.Empty:
        pass

    jq: JoinableQueue[str] = cproc.JoinableQueue(maxsize=4)
    jq.put("job")
    job: str = jq.get()
    jq.task_done()
    jq.join()

    sq: SimpleQueue[bytes] = cproc.SimpleQueue()
    sq.put(b"x")
    raw: bytes = sq.get()

    p = cproc.Process(target=fill, args=(q, 3))
    p.start()
    p.join(timeout=10)
    drained: list[int] = [q.get(timeout=10) for _ in range(3)]
    print(got, batch, job, raw, drained, cproc.active_children(), cproc.current_process().name)


def shared_memory() -> None:
    v: Synchronized[float] = cproc.Value("d", 1.5)
    v.value *= 2
    vi: Synchronized[int] = cproc.Value(ctypes.c_long, 3, lock=cproc.RLock())
    arr: SynchronizedArray[int] = cproc.Array("i", range(5))
    arr[0] = 10
    total: int = sum(arr[:])
    s: SynchronizedString = cproc.Array("c", b"hello")
    greeting: bytes = s.value
    raw_value: ctypes.c_int = cproc.RawValue(ctypes.c_int, 5)
    raw_array: ctypes.Array[ctypes.c_double] = cproc.RawArray(ctypes.c_double, 4)
    plain: ctypes.c_int = cproc.Value(ctypes.c_int, 1, lock=False)
    with arr.get_lock():
        arr[1] += 1
    print(v.value, vi.value, total, greeting, raw_value.value, raw_array[0], plain.value, len(arr))


def synchronization() -> None:
    lock: Lock = cproc.Lock()
    with lock:
        holder: int | None = lock.owner_pid
    acquired: bool = lock.acquire(timeout=1.0)
    if acquired:
        lock.release()
    rlock: RLock = cproc.RLock()
    cond: Condition = cproc.Condition(rlock)
    with cond:
        cond.notify_all()
        done: bool = cond.wait_for(lambda: True, timeout=0.1)
    event: Event = cproc.Event()
    event.set()
    is_set: bool = event.wait(0.1)
    sem: Semaphore = cproc.BoundedSemaphore(2)
    with sem:
        value: int = sem.get_value()
    barrier: Barrier = cproc.Barrier(1)
    index: int = barrier.wait(timeout=1)
    print(holder, done, is_set, value, index)


def pipes_and_managers() -> None:
    parent, child = cproc.Pipe()
    child.send({"k": 1})
    msg: dict[str, int] = parent.recv()
    typed: Connection[str, int] = parent
    typed.send("hello")
    ready: list[Connection[str, int]] = wait([typed], timeout=0.1)
    child.send_bytes(b"abc")
    data: bytes = parent.recv_bytes()
    for c in (parent, child):
        c.close()

    with Listener(("127.0.0.1", 0)) as listener:
        with Client(listener.address) as client, listener.accept() as server:
            client.send("ping")
            pong: str = server.recv()

    with cproc.Manager() as manager:
        m: SyncManager = manager
        shared = m.dict()
        shared["a"] = 1
        lst = m.list([1, 2])
        print(dict(shared), list(lst))
    print(msg, ready, data, pong)


def executor() -> None:
    from concurrent.futures import Future, as_completed
    from cproc.futures import BrokenProcessPool, ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=2, max_tasks_per_child=None) as ex:
        f: Future[int] = ex.submit(square, 4)
        mapped: list[int] = list(ex.map(square, range(5), timeout=30, chunksize=2))
        try:
            done: list[int] = [g.result() for g in as_completed([f])]
        except BrokenProcessPool as e:
            done = []
            print(e)
        print(mapped, done)
    ex.shutdown(wait=True, cancel_futures=False)


def contexts() -> None:
    ctx: BaseContext = cproc.get_context()
    methods: list[str] = cproc.get_all_start_methods()
    method: str | None = cproc.get_start_method(allow_none=True)
    n: int = cproc.cpu_count()
    fork_ctx = cproc.get_context("fork")
    fp = fork_ctx.Process(target=print, args=("hi",))
    fp.start()
    fp.join()
    print(ctx, methods, method, n)


if __name__ == "__main__":
    pools()
    queues_and_processes()
    shared_memory()
    synchronization()
    pipes_and_managers()
    contexts()
    executor()
