"""Benchmarks for issue 2: synchronization primitives and shared memory.

Each function takes the module under test (multiprocessing or cproc) and a
size, and returns the seconds spent in the measured loop only.
"""

from time import perf_counter

from harness import Peer, case, fork_children

ORDER = 10


def two_c_calls_floor(mod, n):
    """The same loop with two no-op C method calls per iteration (clearing an
    empty list): what acquire()+release() costs before doing any work."""
    x = []
    t0 = perf_counter()
    for _ in range(n):
        x.clear()
        x.clear()
    return perf_counter() - t0


TWO_CALLS_FLOOR = Peer("C floor", "multiprocessing", run=two_c_calls_floor,
                       floor=True)
TWO_CALLS_NOTE = ("Part of every iteration is the Python loop and two C "
                  "method calls, which no implementation avoids: the "
                  "“C floor” row times the same loop calling a no-op C method "
                  "twice.")


@case("Lock acquire()+release(), uncontended", target=0.6,
      size=200_000, quick=50_000, matrix=False, work="{size:,} iterations",
      peers=[TWO_CALLS_FLOOR], note=TWO_CALLS_NOTE)
def lock_acquire_release(mod, n):
    lock = mod.Lock()
    t0 = perf_counter()
    for _ in range(n):
        lock.acquire()
        lock.release()
    return perf_counter() - t0


@case("Lock `with lock:`, uncontended", target=0.6,
      size=200_000, quick=50_000, matrix=False, work="{size:,} iterations")
def lock_with(mod, n):
    lock = mod.Lock()
    t0 = perf_counter()
    for _ in range(n):
        with lock:
            pass
    return perf_counter() - t0


@case("Semaphore acquire()+release(), uncontended", target=0.6,
      size=200_000, quick=50_000, matrix=False, work="{size:,} iterations",
      peers=[TWO_CALLS_FLOOR], note=TWO_CALLS_NOTE)
def semaphore_acquire_release(mod, n):
    sem = mod.Semaphore(1)
    t0 = perf_counter()
    for _ in range(n):
        sem.acquire()
        sem.release()
    return perf_counter() - t0


@case("2 processes increment a RawValue under one Lock", target=0.3,
      size=50_000, quick=10_000, work="2 forked × {size:,} increments")
def two_process_counter(mod, n):
    lock = mod.Lock()
    counter = mod.RawValue("i", 0)

    def prepare():
        with lock:
            counter.value  # touch both objects before the clock starts

    def work():
        for _ in range(n):
            with lock:
                counter.value += 1

    elapsed = fork_children(2, prepare, work)
    if counter.value != 2 * n:
        raise AssertionError(f"counter is {counter.value}, expected {2 * n}")
    return elapsed


def value_increment_floor(mod, n):
    """The same statement shape on CPython's own C objects, with no sharing:
    a threading.RLock (handed out by a C call, as get_lock() is) guarding a
    private ctypes int."""
    import ctypes
    import threading
    import operator
    holder = [threading.RLock()]
    get_lock = operator.itemgetter(0)   # a C call returning the lock
    c = ctypes.c_int(0)
    t0 = perf_counter()
    for _ in range(n):
        with get_lock(holder):
            c.value += 1
    elapsed = perf_counter() - t0
    if c.value != n:
        raise AssertionError(f"value is {c.value}, expected {n}")
    return elapsed


@case("`with v.get_lock(): v.value += 1`, Value('i')", target=0.15,
      size=200_000, quick=50_000, matrix=False, work="{size:,} iterations",
      peers=[Peer("C floor", "multiprocessing", run=value_increment_floor, floor=True)],
      note="The statement itself (a call, a `with` block, an attribute read "
           "and write) costs the interpreter more than the target allows: the "
           "“C floor” row runs the same shape on CPython's own C objects, "
           "threading.RLock and a private ctypes int, with nothing shared.")
def value_get_lock_increment(mod, n):
    v = mod.Value("i", 0)
    t0 = perf_counter()
    for _ in range(n):
        with v.get_lock():
            v.value += 1
    elapsed = perf_counter() - t0
    if v.value != n:
        raise AssertionError(f"value is {v.value}, expected {n}")
    return elapsed


ARRAY_READS = 5


def array_read_floor(mod, n):
    """The least time any `arr[:]` returning a list of floats can take here:
    memoryview(...).tolist() on the same shared buffer, all in C, no lock."""
    arr = mod.Array("d", n)
    arr[n - 1] = 1.5
    with memoryview(arr.get_obj()).cast("B").cast("d") as view:
        t0 = perf_counter()
        for _ in range(ARRAY_READS):
            data = view.tolist()
            del data
        elapsed = perf_counter() - t0
        if view.tolist()[n - 1] != 1.5:
            raise AssertionError("tolist() returned wrong contents")
    return elapsed


@case("Read Array('d') with `arr[:]`", target=0.3,
      size=1_000_000, quick=250_000,
      matrix=False, work=f"{ARRAY_READS} × arr[:] of {{size:,}} doubles",
      peers=[Peer("C floor", "multiprocessing", run=array_read_floor,
                  floor=True)],
      note="`arr[:]` must build a list of Python floats, and allocating them "
           "(page faults included) is most of the time: the “C floor” row "
           "times memoryview(arr.get_obj()).tolist() on the same buffer, the "
           "least any implementation returning a list can take.")
def array_read_slice(mod, n):
    arr = mod.Array("d", n)
    arr[n - 1] = 1.5
    t0 = perf_counter()
    for _ in range(ARRAY_READS):
        data = arr[:]
        del data
    elapsed = perf_counter() - t0
    data = arr[:]
    if len(data) != n or data[n - 1] != 1.5:
        raise AssertionError("arr[:] returned wrong contents")
    return elapsed
