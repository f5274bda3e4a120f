"""cproc.dummy: multiprocessing.dummy's API (thread-backed), differential."""

import importlib
import threading

import pytest

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(params=["multiprocessing", "cproc"])
def dummy(request):
    return importlib.import_module(request.param + ".dummy")


def test_names():
    import multiprocessing.dummy as md
    import multiprocessing.dummy.connection as mdc
    import cproc.dummy as cd
    import cproc.dummy.connection as cdc
    assert cd.__all__ == md.__all__ and cdc.__all__ == mdc.__all__
    for name in md.__all__ + ["DummyProcess", "Namespace", "Value", "Array", "dict", "list", "shutdown"]:
        assert getattr(cd, name) is getattr(md, name), name
    for name in mdc.__all__ + ["Connection", "families"]:
        assert getattr(cdc, name) is getattr(mdc, name), name


def test_pool_map_runs_in_threads(dummy):
    seen = set()

    def work(x):
        seen.add(threading.get_ident())
        return x * x

    with dummy.Pool(3) as pool:
        assert pool.map(work, range(10)) == [x * x for x in range(10)]
        assert pool.apply_async(pow, (2, 5)).get(5) == 32
    assert threading.get_ident() not in seen
    assert type(pool).__name__ == "ThreadPool"


def test_process_queue_event(dummy):
    q = dummy.Queue()
    ev = dummy.Event()
    p = dummy.Process(target=lambda: (q.put(dummy.current_process().name), ev.set()))
    p.start()
    assert ev.wait(5) and q.get(timeout=5) == p.name
    p.join(5)
    assert not p.is_alive() and p.exitcode == 0
    assert dummy.active_children() == []


def test_pipe_and_value(dummy):
    a, b = dummy.Pipe()
    a.send({"x": 1})
    assert b.recv() == {"x": 1} and b.poll() is False
    v = dummy.Value("i", 3)
    v.value += 1
    assert v.value == 4
    ns = dummy.Manager().Namespace()
    ns.a = 1
    assert ns.a == 1
