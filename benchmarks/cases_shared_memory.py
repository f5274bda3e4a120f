"""Benchmarks for shared_memory: the life cycle of a SharedMemory block.

One cycle creates a 4 KiB block (a fresh random ``psm_*`` name), attaches it
again by name in the same process, writes through one handle and reads
through the other, closes both handles and unlinks the block: what a program
that hands blocks around by name does per block. multiprocessing's column is
``multiprocessing.shared_memory`` (its resource tracker registers the block
at creation, and up to 3.12 again at attachment, and unregisters it at
unlink); cproc's is ``cproc.shared_memory`` with ``track=True`` (the default:
the block is registered with cproc's watcher process). The tracker and the
watcher are started by the untimed warm-up run, not in the timed ones.

The "C floor" row makes the same system calls with nothing around them:
``shm_open`` (create), ``ftruncate``, ``mmap``, ``shm_open`` (attach),
``mmap``, two ``munmap``/``close``, ``shm_unlink``, on fresh random names,
from a Python loop: what any implementation of the cycle pays before any
bookkeeping of its own.
"""

import importlib
import mmap
import os
import secrets
from time import perf_counter

import _posixshmem

from harness import Peer, case

ORDER = 70
SIZE = 4096


def _module(mod):
    return importlib.import_module(mod.__name__ + ".shared_memory")


def cycle(mod, n):
    SharedMemory = _module(mod).SharedMemory
    t0 = perf_counter()
    for i in range(n):
        a = SharedMemory(create=True, size=SIZE)
        b = SharedMemory(a.name)
        a.buf[0] = i & 0xFF
        ok = b.buf[0] == i & 0xFF
        b.close()
        a.close()
        a.unlink()
        if not ok:
            raise AssertionError("the attached handle does not see the creator's write")
    return perf_counter() - t0


def syscall_floor(_mod, n):
    shm_open, shm_unlink = _posixshmem.shm_open, _posixshmem.shm_unlink
    create = os.O_CREAT | os.O_EXCL | os.O_RDWR
    t0 = perf_counter()
    for i in range(n):
        name = "/psm_" + secrets.token_hex(4)
        fd = shm_open(name, create, 0o600)
        os.ftruncate(fd, SIZE)
        a = mmap.mmap(fd, SIZE)
        fd2 = shm_open(name, os.O_RDWR, 0o600)
        b = mmap.mmap(fd2, SIZE)
        a[0] = i & 0xFF
        ok = b[0] == i & 0xFF
        b.close()
        os.close(fd2)
        a.close()
        os.close(fd)
        shm_unlink(name)
        if not ok:
            raise AssertionError("the second mapping does not see the first's write")
    return perf_counter() - t0


@case("SharedMemory create + attach by name + close + unlink", target=0.5,
      size=5_000, quick=1_000,
      work="{size:,} cycles of a 4 KiB block, attached in the same process",
      peers=[Peer("C floor", "multiprocessing", run=syscall_floor, floor=True)],
      note="Both track the block (multiprocessing: its resource tracker; cproc: "
           "its watcher, track=True). The “C floor” row makes the cycle's "
           "system calls (shm_open, ftruncate, mmap, shm_open, mmap, munmap, "
           "close, shm_unlink) from a Python loop with no bookkeeping.")
def shared_memory_cycle(mod, n):
    return cycle(mod, n)
