"""Manager: differential tests, cproc against multiprocessing (Python 3.11).

cproc.managers is multiprocessing.managers (the server, its protocol, the
proxies) with a server process that is a cproc process and a Pool typeid that
makes a cproc Pool.  Differential tests (fixture ``mp``: multiprocessing's fork
context, or cproc; select a side with ``-k multiprocessing`` or ``-k cproc``)
run the same scenario on both and assert what multiprocessing 3.11 shows:

* every proxy type of ``Manager()`` (Queue, JoinableQueue, list, dict,
  Namespace, Value, Array, Lock, RLock, Semaphore, BoundedSemaphore, Event,
  Condition, Barrier, Pool) used from a child ``mp.Process``;
* ``Manager().Queue()`` used inline: the proxy keeps its manager (and so the
  server) alive, in the parent, in a child, in Pool workers; the server goes
  when the proxy goes;
* ``shutdown()``, the with-statement, and the errors after shutdown;
* the server under the fork, spawn and forkserver start methods, and no
  server left running when the program exits without shutdown().

Children report through multiprocessing's (stdlib) pipes (``ChildSet``) or
through the manager's own proxies.
"""

import gc
import importlib
import multiprocessing
import multiprocessing.managers
import os
import queue

import pytest

from helpers.blocking import pid_gone, wait_until
from helpers.children import ChildSet
from helpers.impls import PROCESS_CLASS, ProcImpl, impl_method_params, warm_up_start_methods
from helpers.scripts import run_impl_script

pytestmark = pytest.mark.timeout(60)


def _cproc_has_pool():
    try:
        import cproc

        importlib.import_module("cproc.pool")
        return hasattr(cproc, "Pool")
    except Exception:  # noqa: BLE001 - not there yet
        return False


needs_pool = pytest.mark.skipif(not _cproc_has_pool(), reason="cproc.Pool is not available yet")


@pytest.fixture(scope="module", autouse=True)
def _warm_up():
    warm_up_start_methods()
    # A Connection handed to a cproc forkserver child (the manager's address
    # pipe) goes through multiprocessing's resource sharer, whose listener
    # socket then stays open for the life of the process: put it in the
    # leak check's baseline.
    try:
        import cproc

        with cproc.get_context("forkserver").Manager():
            pass
    except Exception:  # noqa: BLE001 - the tests report it
        pass


@pytest.fixture(params=impl_method_params())
def impl(request):
    name, method = request.param
    return ProcImpl(name, method)


def _err(exc):
    return (type(exc).__name__, str(exc))


# --------------------------------------------------------------------------
# what the children do (module level: spawn children import them)


def c_queue(q, n):
    got = [q.get(timeout=10) for _ in range(n)]
    size_after_get = q.qsize()
    try:
        q.get_nowait()
        empty = None
    except queue.Empty as exc:
        empty = type(exc).__name__
    q.put(("child", sum(got)))
    return got, size_after_get, empty, q.empty()


def c_joinable(q):
    items = [q.get(timeout=10), q.get(timeout=10)]
    q.task_done()
    q.task_done()
    try:
        q.task_done()
        extra = None
    except ValueError as exc:
        extra = _err(exc)
    return items, extra


def c_list_dict(lst, dct):
    lst.append(3)
    lst.extend([4, 5])
    lst[0] = "first"
    lst += [6]
    dct["child"] = os.getpid() > 0
    dct.update(b=2)
    popped = dct.pop("a")
    default = dct.setdefault("c", [1, 2])
    try:
        dct["missing"]
        missing = None
    except KeyError as exc:
        missing = type(exc).__name__
    return len(lst), lst[-1], 5 in lst, popped, default, sorted(dct.keys()), missing


def c_namespace_value_array(ns, val, arr):
    seen = (ns.x, val.value, list(arr), len(arr))
    ns.y = "from child"
    del ns.x
    val.value = val.value + 10
    arr[1] = 2.5
    return seen


def c_locks(lock, rlock):
    out = {}
    out["lock_busy"] = lock.acquire(False)
    out["lock_timeout"] = lock.acquire(timeout=0.05)
    out["rlock_busy"] = rlock.acquire(timeout=0.05)
    try:
        rlock.release()
        out["rlock_release"] = None
    except RuntimeError as exc:
        out["rlock_release"] = _err(exc)
    lock.release()                      # a Lock may be released by anyone
    out["lock_after_release"] = lock.acquire(False)   # and now the child holds it
    return out


def c_semaphores(sem, bsem):
    out = [sem.acquire(), sem.acquire(), sem.acquire(False), sem.acquire(timeout=0.05)]
    sem.release()
    bsem.acquire()
    bsem.release()
    try:
        bsem.release()
        out.append(None)
    except ValueError as exc:
        out.append(_err(exc))
    return out


def c_event_condition(ready, go, cond, cond_ready):
    ready.set()
    waited = go.wait(10)
    with cond:
        cond_ready.set()
        notified = cond.wait(10)
    return waited, go.is_set(), notified


def c_barrier(barrier):
    return barrier.parties, barrier.wait(10), barrier.broken


def c_pool_proxy(pool):
    out = [pool.map(abs, [-1, -2, 3]), pool.apply(pow, (2, 5)), pool.starmap(divmod, [(7, 2)])]
    # multiprocessing 3.11: a proxy rebuilt in another process has no manager,
    # so its methods that return a proxy (apply_async, imap) fail there
    try:
        pool.apply_async(divmod, (7, 2))
        out.append(None)
    except AttributeError as exc:
        out.append(_err(exc))
    return out


def c_put_items(q, n):
    for i in range(n):
        q.put(i)
    return q.qsize()


def c_report(q, dct, tag):
    q.put((tag, os.getpid()))
    dct[tag] = "ok"


def pool_writer(q):
    for ch in "dongGe":
        q.put(ch)
    return q.qsize()


def pool_reader(q):
    return "".join(q.get(True) for _ in range(q.qsize()))


def pool_record(args):
    dct, key = args
    dct[key] = key * key
    return key


class Counter:
    """A custom type, registered on a BaseManager subclass."""

    def __init__(self, start=0):
        self.n = start

    def incr(self, by=1):
        self.n += by
        return self.n

    def pid(self):
        return os.getpid()


# --------------------------------------------------------------------------
# the API


def test_manager_api(cproc):
    import cproc.managers as cm

    assert cproc.Manager.__doc__ == multiprocessing.Manager.__doc__
    assert "Manager" in cproc.__all__
    assert issubclass(cm.SyncManager, multiprocessing.managers.SyncManager)
    assert issubclass(cm.SyncManager, cm.BaseManager)
    assert issubclass(cm.BaseManager, multiprocessing.managers.BaseManager)
    for name in multiprocessing.managers.__all__:
        assert name in cm.__all__ and hasattr(cm, name), name
    for name in ("BaseProxy", "Token", "Namespace", "ListProxy", "DictProxy", "ValueProxy", "AcquirerProxy",
                 "PoolProxy", "AutoProxy", "RemoteError", "Server"):
        assert getattr(cm, name) is getattr(multiprocessing.managers, name), name
    # multiprocessing's own registry is untouched: only cproc's Pool differs
    mp_reg = multiprocessing.managers.SyncManager._registry
    assert set(cm.SyncManager._registry) == set(mp_reg)
    assert cm.SyncManager._registry["Pool"][0] is not mp_reg["Pool"][0]
    assert cm.SyncManager._registry["Pool"][-1] is multiprocessing.managers.PoolProxy
    assert cm.SyncManager._registry["Queue"] == mp_reg["Queue"]


def test_manager_server_is_a_cproc_process(cproc):
    with cproc.Manager() as m:
        assert type(m).__module__ == "cproc.managers"
        assert isinstance(m._process, cproc.get_context().Process)
        assert m._process.is_alive()
        assert m._process.name.startswith("SyncManager-")
        assert m._process in cproc.active_children()


def test_custom_base_manager(cproc):
    import cproc.managers as cm

    class MyManager(cm.BaseManager):
        pass

    MyManager.register("Counter", Counter)
    assert "Counter" not in cm.BaseManager._registry
    with MyManager() as m:
        assert isinstance(m._process, cproc.get_context().Process)
        c = m.Counter(5)
        assert c.incr() == 6
        assert c.incr(by=4) == 10
        assert c.pid() == m._process.pid
        del c


# --------------------------------------------------------------------------
# every proxy type, from a child process


def test_queue_proxy(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        q = m.Queue()
        for i in (1, 2, 3):
            q.put(i)
        assert q.qsize() == 3
        got, size, empty, is_empty = cs.start(c_queue, q, 3).result()
        assert (got, size, empty, is_empty) == ([1, 2, 3], 0, "Empty", False)
        assert q.get(timeout=10) == ("child", 6)
        with pytest.raises(queue.Empty):
            q.get(timeout=0.01)
        del q


def test_joinable_queue_proxy(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        q = m.JoinableQueue()
        q.put("a")
        q.put("b")
        items, extra = cs.start(c_joinable, q).result()
        assert items == ["a", "b"]
        assert extra == ("ValueError", "task_done() called too many times")
        q.join()   # every task is done: returns at once
        del q


def test_list_and_dict_proxies(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        lst = m.list([1, 2])
        dct = m.dict(a=1)
        res = cs.start(c_list_dict, lst, dct).result()
        assert res == (6, 6, True, 1, [1, 2], ["b", "c", "child"], "KeyError")
        assert lst[:] == ["first", 2, 3, 4, 5, 6]
        assert dict(dct) == {"child": True, "b": 2, "c": [1, 2]}
        del lst, dct


def test_namespace_value_array_proxies(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        ns = m.Namespace(x=1)
        val = m.Value("i", 7)
        arr = m.Array("d", [1.0, 2.0])
        assert cs.start(c_namespace_value_array, ns, val, arr).result() == (1, 7, [1.0, 2.0], 2)
        assert ns.y == "from child"
        assert not hasattr(ns, "x")
        assert val.value == 17
        assert list(arr) == [1.0, 2.5]
        del ns, val, arr


def test_lock_and_rlock_proxies(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        lock = m.Lock()
        rlock = m.RLock()
        assert lock.acquire() and rlock.acquire() and rlock.acquire()
        out = cs.start(c_locks, lock, rlock).result()
        assert out == {
            "lock_busy": False,
            "lock_timeout": False,
            "rlock_busy": False,
            "rlock_release": ("RuntimeError", "cannot release un-acquired lock"),
            "lock_after_release": True,
        }
        assert lock.acquire(False) is False   # the child took it
        lock.release()
        rlock.release()
        rlock.release()
        del lock, rlock


def test_semaphore_proxies(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        sem = m.Semaphore(2)
        bsem = m.BoundedSemaphore(1)
        out = cs.start(c_semaphores, sem, bsem).result()
        assert out == [True, True, False, False, ("ValueError", "Semaphore released too many times")]
        assert sem.acquire(False) is True
        assert sem.acquire(False) is False
        del sem, bsem


def test_event_and_condition_proxies(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        ready, go, cond_ready = m.Event(), m.Event(), m.Event()
        cond = m.Condition()
        child = cs.start(c_event_condition, ready, go, cond, cond_ready)
        assert ready.wait(10)
        assert not go.is_set()
        go.set()
        assert cond_ready.wait(10)
        with cond:            # the child is waiting: it released the lock
            cond.notify_all()
        assert child.result() == (True, True, True)
        del ready, go, cond_ready, cond


def test_barrier_proxy(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        barrier = m.Barrier(2)
        child = cs.start(c_barrier, barrier)
        mine = barrier.wait(10)
        parties, theirs, broken = child.result()
        assert (parties, broken) == (2, False)
        assert {mine, theirs} == {0, 1}
        assert barrier.n_waiting == 0
        del barrier


@needs_pool
def test_pool_proxy(mp):
    with mp.Manager() as m, ChildSet(process=mp.Process) as cs:
        pool = m.Pool(2)
        assert pool.map(abs, [-4, 5]) == [4, 5]
        assert sorted(pool.imap_unordered(abs, [-1, -2])) == [1, 2]
        assert pool.apply_async(pow, (3, 2)).get(10) == 9
        assert pool.starmap(divmod, [(7, 2)]) == [(3, 1)]
        assert cs.start(c_pool_proxy, pool).result() == [
            [1, 2, 3], 32, [(3, 1)], ("AttributeError", "'NoneType' object has no attribute '_registry'")]
        pool.close()
        pool.join()
        del pool


@needs_pool
def test_pool_typeid_makes_a_cproc_pool(cproc):
    with cproc.Manager() as m:
        pool = m.Pool(1)
        try:
            assert pool.apply(os.getppid) == m._process.pid   # its worker is the server's child
        finally:
            pool.terminate()
        del pool


# --------------------------------------------------------------------------
# Manager() used inline: the proxy keeps the server alive


def test_inline_manager_queue(mp):
    q = mp.Manager().Queue()
    gc.collect()
    server = q._manager._process
    pid = server.pid
    assert server.is_alive()
    with ChildSet(process=mp.Process) as cs:
        assert cs.start(c_put_items, q, 3).result() == 3
    gc.collect()
    assert q.qsize() == 3
    assert [q.get(timeout=5) for _ in range(3)] == [0, 1, 2]
    assert server.is_alive()
    del q          # the last reference to the manager: the server is shut down
    gc.collect()
    assert wait_until(lambda: pid_gone(pid), 10)
    assert server.exitcode == 0


@needs_pool
def test_inline_manager_queue_in_pool_workers(mp):
    """Seed example 16: Manager().Queue() shared with Pool workers."""
    q = mp.Manager().Queue()
    pid = q._manager._process.pid
    with mp.Pool(2) as po:
        assert po.apply(pool_writer, (q,)) == 6
        gc.collect()
        assert q.qsize() == 6
        assert po.apply(pool_reader, (q,)) == "dongGe"
        q.put("x")
        res = [po.apply_async(pool_writer, (q,)) for _ in range(3)]
        assert sorted(r.get(10) for r in res)[-1] == 19
    assert q.qsize() == 19
    del q
    gc.collect()
    assert wait_until(lambda: pid_gone(pid), 10)


@needs_pool
def test_dict_proxy_in_pool_workers(mp):
    with mp.Manager() as m:
        d = m.dict()
        with mp.Pool(3) as po:
            assert sorted(po.map(pool_record, [(d, k) for k in range(8)])) == list(range(8))
        assert dict(d) == {k: k * k for k in range(8)}
        del d


# --------------------------------------------------------------------------
# shutdown, the with-statement


def test_shutdown(mp):
    m = mp.Manager()
    server = m._process
    q = m.Queue()
    q.put(1)
    m.shutdown()
    assert server.exitcode == 0
    assert not server.is_alive()
    m.shutdown()                      # again: nothing happens
    with pytest.raises(AssertionError, match="server not yet started"):
        m.Queue()
    with pytest.raises(multiprocessing.ProcessError, match="^Manager has shut down$"):
        m.start()
    with pytest.raises(multiprocessing.ProcessError, match="^Manager has shut down$"):
        with m:
            pass
    with pytest.raises((OSError, EOFError)):
        q.put(2)
    del q, m
    gc.collect()


def test_with_statement(mp):
    with mp.Manager() as m:
        assert m.__enter__() is m
        server = m._process
        d = m.dict(a=1)
        assert d["a"] == 1
        with pytest.raises(multiprocessing.ProcessError, match="^Already started server$"):
            m.start()
    assert server.exitcode == 0
    del d
    # a manager that is not started yet is started by the with-statement
    SyncManager = importlib.import_module(mp.name + ".managers").SyncManager
    with SyncManager() as m2:
        assert m2._process.is_alive()
        assert m2.list([1])[:] == [1]
        server = m2._process
    assert server.exitcode == 0


# --------------------------------------------------------------------------
# start methods


def test_server_under_each_start_method(impl):
    with impl.ctx.Manager() as m:
        assert type(m._process) is impl.ctx.Process
        q, d = m.Queue(), m.dict()
        p = impl.Process(target=c_report, args=(q, d, impl.method))
        try:
            p.start()
            p.join(30)
            assert p.exitcode == 0
        finally:
            if p.exitcode is None:
                p.kill()
                p.join(5)
        tag, pid = q.get(timeout=10)
        assert (tag, pid) == (impl.method, p.pid)
        assert dict(d) == {impl.method: "ok"}
        server = m._process
        del q, d
    assert server.exitcode == 0


_EXIT_SCRIPT = """
def child(q, d):
    q.put(os.getpid() > 0)
    d["child"] = len(d)

if __name__ == "__main__":
    q = ctx.Manager().Queue()          # inline: only the proxy holds the manager
    d = ctx.Manager().dict(x=1)
    p = P(target=child, args=(q, d))
    p.start()
    p.join()
    print("exitcode", p.exitcode)
    print("got", q.get(timeout=10), q.qsize(), sorted(d.items()))
    print("servers", sorted(type(c).__name__ for c in m.active_children()))
    # exits without shutdown(): the servers must go
"""


@pytest.mark.parametrize("impl_method", impl_method_params(), ids=lambda p: "-".join(p))
def test_program_exit_stops_the_server(impl_method, tmp_path):
    name, method = impl_method
    res = run_impl_script(tmp_path, "exit_manager", _EXIT_SCRIPT, name, method, timeout=40)
    assert res.returncode == 0, res.stderr
    cls = PROCESS_CLASS[method]
    assert res.stdout.splitlines() == [
        "exitcode 0",
        "got True 0 [('child', 1), ('x', 1)]",
        f"servers ['{cls}', '{cls}']",
    ], res.stderr
    assert not res.leftover, "a server outlived the program"
    assert "Traceback" not in res.stderr, res.stderr


_POOL_SCRIPT = """
def reader(q):
    return "".join(q.get(True) for _ in range(q.qsize()))

def writer(q):
    for ch in "dongGe":
        q.put(ch)

if __name__ == "__main__":
    q = ctx.Manager().Queue()
    po = ctx.Pool(2)
    po.apply(writer, (q,))
    print(po.apply(reader, (q,)))
    po.close()
    po.join()
    print("end")
"""


@needs_pool
@pytest.mark.parametrize("impl_method", impl_method_params(), ids=lambda p: "-".join(p))
def test_seed_manager_queue_pool_script(impl_method, tmp_path):
    name, method = impl_method
    res = run_impl_script(tmp_path, "manager_pool", _POOL_SCRIPT, name, method, timeout=40)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["dongGe", "end"], res.stderr
    assert not res.leftover
