"""Misuses of cproc's API that mypy must reject (never run).

Each line marked ``# E: <code>`` must get exactly that mypy error code, and no
other line may get one: tests/test_typing.py compares the two.
"""

from __future__ import annotations

import cproc
from cproc.queues import Queue, SimpleQueue
from cproc.sharedctypes import Synchronized


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def misuse() -> None:
    q: Queue[int] = cproc.Queue()
    q.put("x")  # E: arg-type
    q.put_many(["a", "b"])  # E: list-item
    q.get_many("3")  # E: arg-type
    s: str = q.get()  # E: assignment
    sq: SimpleQueue[bytes] = cproc.SimpleQueue()
    n: int = sq.get()  # E: assignment

    with cproc.Pool(processes="4") as pool:  # E: arg-type
        pool.map(add, [1, 2])  # E: arg-type
        pool.map(square, ["a", "b"])  # E: arg-type
        text: str = pool.apply_async(square, (1,)).get()  # E: assignment
        squares: list[str] = pool.map(square, range(3))  # E: arg-type
        pool.imap(square, range(9), chunksize=3).next(timeout=1)  # E: attr-defined

    v: Synchronized[int] = cproc.Value("d", 0.0)  # E: assignment
    cproc.Value("i", 0).value = "x"  # E: assignment
    lock = cproc.Lock()
    lock.acquire(timeout="1")  # E: arg-type
    pid: int = lock.owner_pid  # E: assignment
    cproc.Event().wait(timeout=None, block=True)  # E: call-arg

    a, b = cproc.Pipe()
    a.send(1, 2)  # E: call-arg
    cproc.get_context("spawn").Process(target=square).start(1)  # E: call-arg
    err = cproc.WorkerLostError("lost", pid=1)
    err.exitcode.bit_length()  # E: union-attr
    cproc.set_start_method(3)  # E: arg-type
    cproc.no_such_function()  # E: attr-defined
