"""Benchmarks for issue 4 (part): Pipe/Connection.

Each case forks an echo or sink child with os.fork (the same process
machinery for both implementations) and times only the messages.
"""

import os
import socket
from time import perf_counter

from harness import Peer, case

ORDER = 30


def _fork(body):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        finally:
            os._exit(code)
    return pid


def _reap(pid):
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise AssertionError("child failed")


@case("Pipe round trip of a small object", target=0.5,
      size=20_000, quick=5_000, work="{size:,} send+recv round trips")
def pipe_round_trip(mod, n):
    a, b = mod.Pipe()

    def echo():
        a.close()
        while True:
            obj = b.recv()
            if obj is None:
                return
            b.send(obj)

    pid = _fork(echo)
    b.close()
    msg = ("task", 12345, 3.25)
    try:
        a.send(msg)
        a.recv()   # the child is up
        t0 = perf_counter()
        for _ in range(n):
            a.send(msg)
            a.recv()
        elapsed = perf_counter() - t0
    finally:
        a.send(None)
        a.close()
        _reap(pid)
    return elapsed


def raw_socket_floor(mod, n):
    """The same bytes over a bare socketpair (what Pipe() uses), with no
    framing and no Connection: sendall of 1 MiB, recv_into a reused buffer.
    The least a socket-based Connection can cost."""
    a, b = socket.socketpair()
    payload = b"x" * (1 << 20)

    def sink():
        a.close()
        buf = memoryview(bytearray(1 << 20))
        for _ in range(n):
            got = 0
            while got < len(buf):
                got += b.recv_into(buf[got:])
        b.sendall(b"d")

    pid = _fork(sink)
    b.close()
    try:
        t0 = perf_counter()
        for _ in range(n):
            a.sendall(payload)
        if a.recv(1) != b"d":
            raise AssertionError("sink did not finish")
        elapsed = perf_counter() - t0
    finally:
        a.close()
        _reap(pid)
    return elapsed


@case("Connection.send_bytes of 1 MiB", target=0.7,
      size=500, quick=100, work="{size:,} × 1 MiB to a reading child",
      peers=[Peer("C floor", "multiprocessing", run=raw_socket_floor, floor=True)],
      note="The “C floor” row sends the same bytes over a bare socketpair "
           "(sendall, recv_into a reused buffer), with no framing and no "
           "Connection: what the kernel's socket costs any Pipe.")
def send_bytes_1mib(mod, n):
    a, b = mod.Pipe()
    payload = b"x" * (1 << 20)

    def sink():
        a.close()
        buf = bytearray(1 << 20)
        while True:
            if b.recv_bytes_into(buf) != len(buf):
                break
        b.send_bytes(b"done")

    pid = _fork(sink)
    b.close()
    try:
        t0 = perf_counter()
        for _ in range(n):
            a.send_bytes(payload)
        a.send_bytes(b"end")
        if a.recv_bytes() != b"done":
            raise AssertionError("sink did not finish")
        elapsed = perf_counter() - t0
    finally:
        a.close()
        _reap(pid)
    return elapsed
