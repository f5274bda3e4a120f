"""cproc.dask.Pool on a real Dask cluster, against the local cproc.Pool.

The module starts, once, a real loopback cluster with Dask's own command
lines, as the README tells users to: ``dask scheduler`` and ``dask worker
--nworkers 2 --nthreads 1`` (two worker processes under their nannies), in
their own session, and stops them at the end. The workers get this directory
on their PYTHONPATH, as a real cluster has the user's modules installed.
Pools share one module-scoped distributed.Client (a Client takes a second or
more to connect); its connections to the scheduler are allowed by the leak
check while the module runs (helpers.resources.FD_ALLOWANCES).

Differential tests run the same scenario on cproc.Pool(2) and on the Dask
pool: same results, same exception types and messages. Other tests check
what only the Dask pool promises: the work runs on the Dask workers, a
killed worker gives WorkerLostError and the pool goes on, Ctrl+C and
terminate() leave nothing running on the cluster, the CPROC_DASK_SCHEDULER
switch from a plain script, functions of __main__ and of a notebook.
"""

import functools
import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")

import cproc  # noqa: E402
import cproc.dask  # noqa: E402
from multiprocessing import TimeoutError  # noqa: E402
from multiprocessing.pool import MaybeEncodingError, RemoteTraceback  # noqa: E402

from helpers.blocking import wait_until  # noqa: E402
from helpers.resources import FD_ALLOWANCES, SHM_ALLOWANCES, proc_stats, tcp_peers  # noqa: E402
from helpers.scripts import child_env, kill_session, read_line  # noqa: E402

pytestmark = pytest.mark.timeout(60)

HERE = os.path.dirname(os.path.abspath(__file__))
START_TIMEOUT = 60


# --------------------------------------------------------------------------
# the cluster


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _session(sid):
    return [pid for pid, fields in proc_stats() if int(fields[3]) == sid and fields[0] != "Z"]


def _stop(proc, timeout=15):
    """SIGTERM, then wait for the whole session (the nanny's workers, its resource
    tracker cleaning /dev/shm) to go; SIGKILL what is left after timeout."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    if not wait_until(lambda: not _session(proc.pid), timeout=timeout):
        kill_session(proc.pid)
    proc.wait()


class Cluster:
    def __init__(self, tmp):
        self.port = _free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        env = child_env()
        env.pop(cproc.dask.ENV_SCHEDULER, None)
        dask = [os.path.join(os.path.dirname(sys.executable), "dask")]
        if not os.path.exists(dask[0]):
            dask = [sys.executable, "-m", "distributed.cli.dask_spec"]  # pragma: no cover
        self.procs = []
        self.logs = []
        for name, args in (
                ("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                               "--no-dashboard"]),
                ("workers", ["worker", self.address, "--nworkers", "2", "--nthreads", "1",
                             "--host", "127.0.0.1", "--no-dashboard", "--death-timeout", "30"])):
            log = open(os.path.join(tmp, name + ".log"), "wb")
            self.logs.append(log)
            self.procs.append(subprocess.Popen(dask + args, stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, env=env, cwd=tmp,
                                               start_new_session=True))
        self.client = distributed.Client(self.address, timeout=START_TIMEOUT, set_as_default=False)
        self.wait_workers()

    def wait_workers(self, n=2):
        """Wait until n workers are up (after a test killed one: its nanny restarts it)."""
        self.client.wait_for_workers(n, timeout=START_TIMEOUT)
        wait_until(lambda: len(self.client.nthreads()) == n, timeout=START_TIMEOUT)

    def ports(self):
        ports = {self.port}
        for addr in self.client.nthreads():
            ports.add(int(addr.rsplit(":", 1)[1]))
        return ports

    def running(self):
        """How many tasks of cproc pools run in the workers (their threads), and
        how many tasks the scheduler has processing."""
        threads = self.client.run(lambda: sum(len(s.running) for s in cproc.dask._pools.values()))
        processing = self.client.processing()
        return sum(threads.values()), sum(len(v) for v in processing.values())

    def pids(self):
        """Every live process of the cluster (its sessions)."""
        sids = {p.pid for p in self.procs}
        return [pid for pid, fields in proc_stats() if int(fields[3]) in sids]

    def worker_pids(self):
        return set(self.client.run(os.getpid).values())

    def close(self):
        try:
            self.client.close()
        finally:
            for proc in reversed(self.procs):
                _stop(proc)
            for log in self.logs:
                log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(str(tmp_path_factory.mktemp("dask")))

    def client_socket(fd, link):
        if not link.startswith("socket:["):
            return False
        peer = tcp_peers().get(int(link[8:-1]))
        return peer is not None and peer[0] == "127.0.0.1" and peer[1] in c.ports()

    def cluster_shm(name):
        """A file a cluster process maps, e.g. a semaphore its nanny made for a
        restarted worker (mapped under glibc's temporary name: matched by inode)."""
        try:
            inode = os.stat(f"/dev/shm/{name}").st_ino
        except OSError:
            return True
        return any(inode in _shm_inodes(pid) for pid in c.pids())

    FD_ALLOWANCES.append(client_socket)
    SHM_ALLOWANCES.append(cluster_shm)
    try:
        yield c
    finally:
        FD_ALLOWANCES.remove(client_socket)
        SHM_ALLOWANCES.remove(cluster_shm)
        c.close()


def _shm_inodes(pid):
    try:
        with open(f"/proc/{pid}/maps") as f:
            return {int(line.split()[4]) for line in f if " /dev/shm/" in line}
    except OSError:
        return set()


@pytest.fixture
def dpool(cluster):
    """A Dask pool on the cluster (the module's client), terminated at teardown."""
    pools = []

    def make(*args, **kwargs):
        pool = cproc.dask.Pool(*args, client=cluster.client, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()


def _outcome(fn, *args):
    """(True, value) or (False, exception type, message)."""
    try:
        return True, fn(*args)
    except Exception as e:
        return False, type(e), str(e)


# --------------------------------------------------------------------------
# task functions (the workers import this module by name)


def square(x):
    return x * x


def add(a, b=0, *, c=0):
    return a + b + c


def fail_on_5(x):
    if x == 5:
        raise ValueError("item %d is bad" % x)
    return x


def unpicklable_result(x):
    return threading.Lock()


def where(_=None):
    w = distributed.get_worker()
    return w.address, os.getpid()


def sleep_then(seconds, value=None):
    time.sleep(seconds)
    return value


def busy_loop(seconds):
    """Python code (an interrupt lands between two bytecodes)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)
    return "finished"


def die(how):
    if how == "os._exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


def span(seconds):
    t0 = time.time()
    time.sleep(seconds)
    return os.getpid(), t0, time.time()


def nbytes(buf, i=0):
    return len(buf) + i


_init_values = []          # in a worker process: the initializer calls of every pool


def init(value):
    _init_values.append(value)


def init_fails(value):
    raise RuntimeError("initializer failed with %r" % (value,))


def read_init(_=None):
    """(the last initializer value, how many times it ran here, pid)"""
    value = _init_values[-1] if _init_values else None
    return value, _init_values.count(value), os.getpid()


# --------------------------------------------------------------------------
# differential: the same scenario on the local pool and on the Dask pool


SCENARIOS = {
    "map": lambda p: p.map(square, range(100)),
    "map chunksize 7": lambda p: p.map(square, range(50), chunksize=7),
    "map of a generator": lambda p: p.map(square, (i for i in range(30))),
    "map empty": lambda p: p.map(square, []),
    "starmap": lambda p: p.starmap(add, [(i, i + 1) for i in range(40)]),
    "apply kwds": lambda p: p.apply(add, (1,), {"b": 2, "c": 3}),
    "apply_async get": lambda p: p.apply_async(square, (12,)).get(timeout=30),
    "map_async get": lambda p: p.map_async(square, range(10)).get(timeout=30),
    "starmap_async": lambda p: p.starmap_async(add, [(1, 2), (3, 4)]).get(timeout=30),
    "imap": lambda p: list(p.imap(square, range(25))),
    "imap chunksize 4": lambda p: list(p.imap(square, range(25), chunksize=4)),
    "imap_unordered": lambda p: sorted(p.imap_unordered(square, range(25))),
    "imap_unordered chunksize 3": lambda p: sorted(p.imap_unordered(square, range(25), 3)),
    "lambda": lambda p: p.map(lambda x: x + 1, range(10)),
    "closure": lambda p: p.map((lambda k: lambda x: x * k)(3), range(10)),
    "partial": lambda p: p.map(functools.partial(add, b=10), range(10)),
    "map error": lambda p: p.map(fail_on_5, range(10)),
    "apply error": lambda p: p.apply(fail_on_5, (5,)),
    "imap error": lambda p: list(p.imap(fail_on_5, range(10))),
    "imap chunksize 0": lambda p: p.imap(square, range(3), chunksize=0),
    "unpicklable argument": lambda p: p.apply(square, (threading.Lock(),)),
    "unpicklable function": lambda p: p.map(threading.Lock(), range(3)),
    "apply TypeError in task": lambda p: p.apply(square, ("x",)),
    "map_async get timeout": lambda p: p.map_async(sleep_then, [2]).get(timeout=0.05),
    "initializer error": None,      # see test_initializer_error_differential
}


@pytest.fixture(scope="module")
def local_pool():
    with cproc.Pool(2) as pool:
        yield pool


@pytest.fixture(scope="module")
def shared_dpool(cluster):
    with cproc.dask.Pool(client=cluster.client) as pool:
        yield pool


@pytest.mark.parametrize("name", [n for n, f in SCENARIOS.items() if f is not None])
def test_same_as_local_pool(name, local_pool, shared_dpool):
    scenario = SCENARIOS[name]
    local = _outcome(scenario, local_pool)
    dask = _outcome(scenario, shared_dpool)
    assert dask == local
    if name == "map_async get timeout":
        assert local[1] is TimeoutError


def test_remote_traceback_is_the_cause(local_pool, shared_dpool):
    for pool in (local_pool, shared_dpool):
        with pytest.raises(ValueError, match="item 5 is bad") as info:
            pool.map(fail_on_5, range(10))
        cause = info.value.__cause__
        assert isinstance(cause, RemoteTraceback)
        assert 'in fail_on_5\n    raise ValueError("item %d is bad" % x)' in str(cause)
        assert "cproc/dask.py" not in str(cause)


def test_unpicklable_result_is_maybe_encoding_error(local_pool, shared_dpool):
    reasons = []
    for pool in (local_pool, shared_dpool):
        with pytest.raises(MaybeEncodingError) as info:
            pool.apply(unpicklable_result, (1,))
        reasons.append(str(info.value).split("Reason: ")[1])
    assert reasons[0] == reasons[1] == "'TypeError(\"cannot pickle '_thread.lock' object\")'"


def test_callbacks_run_in_the_parent(local_pool, shared_dpool):
    for pool in (local_pool, shared_dpool):
        seen = []
        ok = pool.map_async(square, range(8), callback=lambda v: seen.append(("ok", os.getpid(), v)))
        bad = pool.map_async(fail_on_5, range(8), chunksize=1,
                             error_callback=lambda e: seen.append(("error", os.getpid(), repr(e))))
        applied = [pool.apply_async(fail_on_5, (i,), callback=lambda v: seen.append(("one", v)),
                                    error_callback=lambda e: seen.append(("one error", str(e))))
                   for i in (4, 5)]
        for r in [ok, bad] + applied:
            r.wait(30)
        assert ok.successful() and not bad.successful()
        assert sorted(map(str, seen)) == sorted(map(str, [
            ("ok", os.getpid(), [x * x for x in range(8)]),
            ("error", os.getpid(), "ValueError('item 5 is bad')"),
            ("one", 4), ("one error", "item 5 is bad")]))


def test_initializer_error_differential(cluster):
    outcomes = []
    with cproc.Pool(2, initializer=init_fails, initargs=(7,)) as pool:
        outcomes.append(_outcome(pool.map, square, range(4)))
    with cproc.dask.Pool(client=cluster.client, initializer=init_fails, initargs=(7,)) as pool:
        outcomes.append(_outcome(pool.map, square, range(4)))
    assert outcomes[0] == outcomes[1] == (False, RuntimeError, "initializer failed with 7")


def test_ready_successful_and_value_error_before_ready(local_pool, shared_dpool):
    outcomes = []
    for pool in (local_pool, shared_dpool):
        r = pool.apply_async(sleep_then, (1.0, "done"))
        early = _outcome(r.successful)
        outcomes.append((r.ready(), early[:2], r.get(30), r.ready(), r.successful()))
    assert outcomes[0] == outcomes[1] == (False, (False, ValueError), "done", True, True)


def test_closed_pool_refuses_and_join_waits(cluster):
    outcomes = []
    for make in (lambda: cproc.Pool(2), lambda: cproc.dask.Pool(client=cluster.client)):
        pool = make()
        r = pool.map_async(sleep_then, [0.3, 0.3, 0.3], chunksize=1)
        pool.close()
        refused = _outcome(pool.apply, square, (2,))
        pool.join()
        outcomes.append((refused, r.ready(), r.get(0)))
    assert outcomes[0] == outcomes[1] == ((False, ValueError, "Pool not running"), True,
                                          [None, None, None])


# --------------------------------------------------------------------------
# what only the Dask pool promises


def test_work_runs_on_the_dask_workers(cluster, dpool):
    pool = dpool()
    assert pool._processes == 2 == sum(cluster.client.nthreads().values())
    seen = set(pool.map(where, range(20), chunksize=1))
    workers = {addr: pid for addr, pid in cluster.client.run(os.getpid).items()}
    assert {pid for _, pid in seen} <= set(workers.values())
    assert {addr for addr, _ in seen} <= set(workers)
    assert os.getpid() not in {pid for _, pid in seen}
    assert len(seen) == 2                       # both workers took tasks


def test_map_of_tiny_tasks_is_chunked(cluster, dpool):
    pool = dpool()
    assert pool.map(square, range(10_000)) == [x * x for x in range(10_000)]
    # 2 processes x 4 = 8 chunks (multiprocessing's computation): 8 Dask tasks, not 10,000
    key = pool._engine.key
    ran = cluster.client.run(lambda: cproc.dask._pools[key].done if key in cproc.dask._pools else 0)
    assert sum(ran.values()) == 8


def test_processes_bounds_tasks_in_flight(dpool):
    pool = dpool(processes=1)
    spans = pool.map(span, [0.2] * 4, chunksize=1)
    spans.sort(key=lambda s: s[1])
    for (_, _, end), (_, start, _) in zip(spans, spans[1:]):
        assert start >= end - 0.01          # one at a time
    both = dpool(processes=2).map(span, [0.4] * 2, chunksize=1)
    assert max(s[1] for s in both) < min(s[2] for s in both)     # two at once


def test_initializer_once_per_worker_process(cluster, dpool):
    for _ in range(2):      # each pool runs its own initializer once per worker process
        value = os.urandom(8).hex()
        out = dpool(initializer=init, initargs=(value,)).map(read_init, range(16), chunksize=1)
        assert {v for v, _, _ in out} == {value}
        assert {runs for _, runs, _ in out} == {1}
        assert {pid for _, _, pid in out} == cluster.worker_pids()


def test_maxtasksperchild_reruns_the_initializer(dpool):
    value = os.urandom(8).hex()
    pool = dpool(processes=1, initializer=init, initargs=(value,), maxtasksperchild=2)
    out = pool.map(read_init, range(12), chunksize=1)
    for pid in {pid for _, _, pid in out}:
        runs = [r for _, r, p in out if p == pid]
        assert runs == [1 + i // 2 for i in range(len(runs))]


def test_cproc_objects_are_refused(dpool):
    pool = dpool()
    for obj in (cproc.Lock(), cproc.Queue(), cproc.Value("i"), cproc.RawArray("d", 3),
                cproc.Event()):
        with pytest.raises(TypeError, match="do not cross machines"):
            pool.apply(square, (obj,))
        if hasattr(obj, "close"):
            obj.close()


def test_big_argument_is_scattered_once(cluster, dpool):
    np = pytest.importorskip("numpy")
    big = np.arange(1 << 19, dtype=np.int64)               # 4 MiB
    pool = dpool()
    expected = [len(big) + i for i in range(12)]
    assert pool.map(functools.partial(nbytes, big), range(12), chunksize=1) == expected
    assert pool.starmap(nbytes, [(big, i) for i in range(12)], chunksize=1) == expected
    assert len(pool._engine.scattered) == 1                 # one copy sent to the cluster
    fblob = pool._fbytes(functools.partial(nbytes, big))
    assert len(fblob[0]) < 10_000 and len(fblob[1]) == 1    # the function refers to it


def test_imap_is_lazy_and_breaking_out_drops_the_rest(dpool):
    pool = dpool()
    drawn = []

    def endless():
        for i in itertools.count():
            drawn.append(i)
            yield i

    for x in pool.imap(square, endless()):
        if x >= 100:
            break
    assert len(drawn) < 10 + 300                            # bounded read-ahead
    wait_until(lambda: not pool._engine.pending and not pool._engine.inflight, timeout=10)
    assert not pool._engine.pending and not pool._engine.inflight
    assert pool.map(square, range(3)) == [0, 1, 4]


@pytest.mark.parametrize("how", ["os._exit", "SIGKILL"])
@pytest.mark.timeout(120)
def test_killed_worker_fails_its_task_and_the_pool_goes_on(cluster, dpool, how):
    pool = dpool()
    pids = cluster.worker_pids()
    r = pool.apply_async(die, (how,))
    with pytest.raises(cproc.WorkerLostError, match="died .*while running a task"):
        r.get(60)
    assert r.ready() and not r.successful()
    assert pool.map(square, range(20)) == [x * x for x in range(20)]
    cluster.wait_workers()                               # its nanny replaced it
    assert len(cluster.worker_pids() - pids) == 1


@pytest.mark.timeout(90)
def test_terminate_leaves_nothing_running(cluster, dpool):
    pool = dpool()
    python_loop = pool.apply_async(busy_loop, (30,))
    in_c = pool.apply_async(sleep_then, (30,))
    wait_until(lambda: cluster.running()[0] == 2, timeout=30)
    t0 = time.monotonic()
    pool.terminate()
    elapsed = time.monotonic() - t0
    for r in (python_loop, in_c):
        with pytest.raises(cproc.WorkerLostError, match="terminated"):
            r.get(1)
    assert cluster.running() == (0, 0)
    assert elapsed < 20
    cluster.wait_workers()      # the worker stuck in time.sleep was restarted


def test_with_block_leaves_nothing_running(cluster):
    with cproc.dask.Pool(client=cluster.client) as pool:
        results = [pool.apply_async(busy_loop, (30,)) for _ in range(4)]
        wait_until(lambda: cluster.running()[0] == 2, timeout=30)
    assert cluster.running() == (0, 0)
    assert all(r.ready() and not r.successful() for r in results)


def test_unreachable_scheduler_gives_a_clear_error_in_time():
    port = _free_port()             # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach the Dask scheduler at "
                                              f"tcp://127.0.0.1:{port} within 1 s"):
        cproc.dask.Pool(address=f"tcp://127.0.0.1:{port}", timeout=1)
    assert time.monotonic() - t0 < 10


def test_no_scheduler_named():
    env = {k: v for k, v in os.environ.items() if k != cproc.dask.ENV_SCHEDULER}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import cproc.dask
        try:
            cproc.dask.Pool()
        except ValueError as e:
            print(e)
    """)], capture_output=True, text=True, env=env, timeout=30)
    assert "pass address= or client=, or set CPROC_DASK_SCHEDULER" in out.stdout, out.stderr


# --------------------------------------------------------------------------
# plain scripts: the switch, Ctrl+C, import cost, no distributed


def _script(tmp_path, body, env_extra, name="script.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    env = child_env()
    env.pop(cproc.dask.ENV_SCHEDULER, None)
    env.update(env_extra)
    return path, env


SWITCH_SCRIPT = """
    import os, sys
    import cproc

    COUNTER = 0

    def bump(start):             # an initializer of __main__ that sets a global
        global COUNTER
        COUNTER = start

    def work(x):                 # a function of __main__: travels by value
        return x * 10 + COUNTER, os.getpid()

    class Point:                 # a class of __main__
        def __init__(self, x):
            self.x = x

    if __name__ == "__main__":
        k = 5
        with cproc.Pool(initializer=bump, initargs=(3,)) as pool:
            print(type(pool).__module__, pool._processes)
            out = pool.map(work, range(6))
            print([v for v, _ in out])
            print(sorted({pid for _, pid in out} - {os.getpid()}) == sorted({pid for _, pid in out}))
            print(pool.map(lambda x: x + k, range(3)))
            print(pool.apply(lambda p: p.x * 2, (Point(21),)))
        with cproc.get_context("spawn").Pool(1) as pool:
            print(type(pool).__module__, pool.apply(sum, ([1, 2, 3],)))
        print("distributed" in sys.modules)
"""


@pytest.mark.timeout(90)
def test_env_switch_from_a_plain_script(cluster, tmp_path):
    path, env = _script(tmp_path, SWITCH_SCRIPT, {cproc.dask.ENV_SCHEDULER: cluster.address})
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                         timeout=80)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n") == [
        "cproc.dask 2", "[3, 13, 23, 33, 43, 53]", "True", "[5, 6, 7]", "42",
        "cproc.dask 6", "True", ""]
    # unset, the same script runs on the local pool and never imports dask
    path, env = _script(tmp_path, SWITCH_SCRIPT, {})
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                         timeout=80)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert lines[0] == "cproc.pool %d" % os.cpu_count()
    assert lines[1:5] == ["[3, 13, 23, 33, 43, 53]", "True", "[5, 6, 7]", "42"]
    assert lines[5:] == ["cproc.pool 6", "False", ""]


def test_import_cproc_does_not_import_dask():
    env = {k: v for k, v in os.environ.items() if k != cproc.dask.ENV_SCHEDULER}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys, cproc
        with cproc.Pool(1) as p:
            p.apply(abs, (-1,))
        print(sorted(m for m in sys.modules
                     if m == "cproc.dask" or m.split(".")[0] in ("dask", "distributed")))
    """)], capture_output=True, text=True, env=env, timeout=30)
    assert out.stdout == "[]\n", out.stderr


def test_without_distributed_the_import_error_says_what_to_install():
    out = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        sys.modules["distributed"] = None        # as if not installed
        from cproc.dask import Pool
        try:
            Pool(address="tcp://127.0.0.1:1")
        except ImportError as e:
            print(e)
    """)], capture_output=True, text=True, timeout=30)
    assert out.stdout == 'cproc.dask needs dask.distributed: pip install "cproc[dask]"\n', out.stderr


# a task that runs for a minute unless its worker is stopped (the Ctrl+C scripts)
SLOW_TASK = """
    import time

    def slow(i):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            time.sleep(0.01)
        return i
"""

CTRL_C_SCRIPT = SLOW_TASK + """
    import sys
    import cproc

    if __name__ == "__main__":
        pool = cproc.Pool()             # no `with`: Ctrl+C itself must cancel
        print("ready", flush=True)
        try:
            pool.map(slow, range(8), chunksize=1)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            raise
"""


def _start_busy_script(cluster, tmp_path, body):
    """Start a Ctrl+C script on the cluster (its own session) and return it
    once it printed "ready" and both workers run one of its tasks."""
    path, env = _script(tmp_path, body, {cproc.dask.ENV_SCHEDULER: cluster.address})
    proc = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, bufsize=0, start_new_session=True)
    try:
        assert read_line(proc.stdout, 60) == "ready"
        assert wait_until(lambda: cluster.running() == (2, 2), timeout=30)
    except BaseException:
        _stop(proc)
        proc.stdout.close()
        proc.stderr.close()
        raise
    return proc


@pytest.mark.timeout(90)
def test_ctrl_c_in_a_script_leaves_no_task_running(cluster, tmp_path):
    proc = _start_busy_script(cluster, tmp_path, CTRL_C_SCRIPT)
    try:
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert read_line(proc.stdout, 10) == "interrupted"
        interrupted_in = time.monotonic() - t0
        proc.wait(30)
        assert proc.returncode != 0
        assert b"KeyboardInterrupt" in proc.stderr.read()
    finally:
        _stop(proc)
        proc.stdout.close()
        proc.stderr.close()
    assert interrupted_in < 5
    assert wait_until(lambda: cluster.running() == (0, 0), timeout=10)


@pytest.mark.timeout(120)
def test_function_defined_in_a_notebook(cluster, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    import asyncio
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(f"""
        import os, cproc.dask
        def cube(x):
            return x ** 3, os.getpid()
        with cproc.dask.Pool(address={cluster.address!r}) as pool:
            out = pool.map(cube, range(5))
        print([v for v, _ in out], os.getpid() not in {{p for _, p in out}})
    """))]
    client = nbclient.NotebookClient(nb, timeout=90, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})

    async def run():
        try:
            await client.async_execute()
        finally:
            if client.km is not None and client.km.has_kernel:
                await client.km.shutdown_kernel(now=True)

    asyncio.run(run())
    outputs = [o for o in nb.cells[0].outputs]
    assert [o.get("text") for o in outputs] == ["[0, 1, 8, 27, 64] True\n"], outputs


# ==========================================================================
# asyncio: the Dask pool's results are awaitable as the local pool's are
# (the same C result types, fed by the pool's collector thread: it wakes the
# awaiting loop through the loop's wake-up pipe, no thread per await, no
# polling; see tests/test_pool_asyncio.py for the local pool)


def _asyncio_run(coro, timeout=60):
    import asyncio
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_await_dask_results_and_async_for(dpool):
    import asyncio

    async def main(pool):
        assert await pool.apply_async(square, (7,)) == 49
        assert await pool.map_async(square, range(10)) == [x * x for x in range(10)]
        assert await pool.starmap_async(add, [(2, 3), (3, 4)]) == [5, 7]
        with pytest.raises(ValueError, match="item 5 is bad"):
            await pool.apply_async(fail_on_5, (5,))
        assert [x async for x in pool.imap(square, range(12))] == [x * x for x in range(12)]
        got = [x async for x in pool.imap_unordered(square, range(9))]
        assert sorted(got) == [x * x for x in range(9)]
        threads = threading.active_count()
        results = [pool.apply_async(square, (i,)) for i in range(200)]
        assert await asyncio.gather(*results) == [i * i for i in range(200)]
        assert threading.active_count() == threads        # no thread per await

    _asyncio_run(main(dpool(2)))


def test_dask_cancelled_await_loses_no_other_result(dpool):
    import asyncio

    async def one(result):
        return await result

    async def main(pool):
        results = [pool.apply_async(sleep_then, (0.05, i)) for i in range(10)]
        tasks = [asyncio.ensure_future(one(r)) for r in results]
        await asyncio.sleep(0)
        for t in tasks[::2]:
            t.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert [d for d in done[1::2]] == list(range(1, 10, 2))
        assert all(isinstance(d, asyncio.CancelledError) for d in done[::2])
        assert [await r for r in results] == list(range(10))     # the cancelled ones' too
        slow = pool.apply_async(sleep_then, (1.0, "slow"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(one(slow), 0.05)
        assert await slow == "slow"

    _asyncio_run(main(dpool(2)))


ASYNC_CTRL_C_SCRIPT = SLOW_TASK + """
    import asyncio, sys
    import cproc

    async def main(pool):
        results = [pool.apply_async(slow, (i,)) for i in range(4)]
        print("ready", flush=True)
        await asyncio.gather(*results)

    if __name__ == "__main__":
        with cproc.Pool() as pool:
            asyncio.run(main(pool))
"""


@pytest.mark.timeout(90)
def test_ctrl_c_while_awaiting_dask_results(cluster, tmp_path):
    """As with the local pool (test_pool_asyncio.py): asyncio's
    KeyboardInterrupt, exit by SIGINT, and nothing of the pool left running
    on the cluster once the script has left its `with`."""
    proc = _start_busy_script(cluster, tmp_path, ASYNC_CTRL_C_SCRIPT)
    try:
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(30)
        exited_in = time.monotonic() - t0
        stderr = proc.stderr.read().decode(errors="replace")
    finally:
        _stop(proc)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGINT, stderr
    assert stderr.rstrip().splitlines()[-1] == "KeyboardInterrupt", stderr
    assert exited_in < 10
    assert wait_until(lambda: cluster.running() == (0, 0), timeout=10)
