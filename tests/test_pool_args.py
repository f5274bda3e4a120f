"""Pool: arguments of any type, as multiprocessing takes them.

Differential tests (fixture ``mp``): ``apply``/``apply_async`` with ``args``
that are not a tuple or ``kwds`` that are not a dict, ``starmap`` with items
that are not tuples, ``map``/``imap`` of something that is not iterable. The
expected outcome is not a transcript: it is what the running interpreter does
with the same call made here (multiprocessing's worker runs
``func(*args, **kwds)``; its starmap runs ``itertools.starmap``), so the
messages are the running Python's. Both implementations must give it: the
call returns, ``get()`` raises the interpreter's exception (or returns the
result), the worker survives.

Then cproc's own C entry points (fixture ``cproc``): each checks the type of
what it is given before use, so a bad argument is an exception, never a crash.
"""

import collections
import fractions
import itertools
import os
import types

import pytest

from test_pool import running

pytestmark = pytest.mark.timeout(60)


def echo_call(*args, **kwds):
    return args, kwds


def both(a, b):
    return a + b


def pid_of():
    return os.getpid()


def outcome(call):
    """('ok', value) or ('error', type, str(exc)) of call()."""
    try:
        return ("ok", call())
    except Exception as e:
        return ("error", type(e), str(e))


# (args, kwds): every one the interpreter unpacks (or refuses) by itself
UNPACKED = {
    "kwds str": ((), "ab"),
    "kwds int": ((), 5),
    "kwds empty list": ((), []),
    "kwds list": ((), [1]),
    "kwds tuple": ((), ()),
    "kwds None": ((), None),
    "kwds UserDict": ((), collections.UserDict(a=1)),
    "kwds OrderedDict": ((), collections.OrderedDict(b=2)),
    "kwds ChainMap": ((), collections.ChainMap({"a": 1}, {"b": 2})),
    "kwds non-str key": ((), {1: 2}),
    "kwds duplicate of a positional": ((1,), {"a": 1}),
    "args list": ([1, 2], {"c": 3}),
    "args str": ("ab", {}),
    "args dict": ({"x": 1}, {}),
    "args set": ({3}, {}),
    "args range": (range(3), {}),
    "args None": (None, {}),
    "args int": (5, {}),
    "args and kwds bad": (5, "ab"),
}


@pytest.mark.parametrize("case", list(UNPACKED))
def test_apply_async_unpacks_args_and_kwds_as_the_interpreter(mp, case):
    args, kwds = UNPACKED[case]
    func = both if case == "kwds duplicate of a positional" else echo_call
    expected = outcome(lambda: func(*args, **kwds))
    errors = []
    with running(mp.Pool(1)) as p:
        worker = p.apply(pid_of)
        r = p.apply_async(func, args, kwds, error_callback=errors.append)   # returns: no error yet
        got = outcome(lambda: r.get(20))
        assert got == expected, case
        assert r.successful() == (expected[0] == "ok")
        assert len(errors) == (expected[0] == "error")
        assert outcome(lambda: p.apply(func, args, kwds)) == expected
        assert p.apply(pid_of) == worker, "the worker died"


def test_unpicklable_args_fail_at_get(mp):
    with running(mp.Pool(1)) as p:
        r = p.apply_async(echo_call, (x for x in (1, 2)))
        with pytest.raises(TypeError, match="pickle"):
            r.get(20)
        assert p.apply(echo_call, (1,)) == ((1,), {})


def test_kwds_mapping_that_only_cloudpickle_pickles(mp):
    """A mappingproxy: plain pickle refuses it, so multiprocessing's get()
    raises the pickling error; cproc falls back to cloudpickle (README: "Any
    callable, any cproc object"), and the worker unpacks it as a mapping."""
    kwds = types.MappingProxyType({"a": 1})
    with running(mp.Pool(1)) as p:
        r = p.apply_async(echo_call, (), kwds)
        if mp.name == "multiprocessing":
            with pytest.raises(TypeError, match="pickle"):
                r.get(20)
        else:
            assert r.get(20) == ((), {"a": 1})


STAR_ITEMS = {
    "list": [1, 2],
    "str": "ab",
    "int": 5,
    "None": None,
    "too many": (1, 2, 3),
}


@pytest.mark.parametrize("case", list(STAR_ITEMS))
@pytest.mark.parametrize("call", ["starmap", "starmap_async"])
def test_starmap_items_unpacked_as_itertools_starmap(mp, case, call):
    item = STAR_ITEMS[case]
    expected = outcome(lambda: list(itertools.starmap(both, [item])))
    with running(mp.Pool(1)) as p:
        if call == "starmap":
            got = outcome(lambda: p.starmap(both, [(1, 2), item]))
        else:
            got = outcome(lambda: p.starmap_async(both, [(1, 2), item]).get(20))
        if expected[0] == "ok":
            expected = ("ok", [3] + expected[1])
        assert got == expected


@pytest.mark.parametrize("call", ["map", "map_async", "starmap", "imap", "imap_unordered"])
@pytest.mark.parametrize("chunksize", [None, 2])
def test_map_of_a_non_iterable(mp, call, chunksize):
    expected = outcome(lambda: iter(5))
    with running(mp.Pool(1)) as p:
        method = getattr(p, call)
        if call.startswith("imap"):
            got = outcome(lambda: list(method(both, 5, chunksize or 1)))
        elif call == "map_async":
            got = outcome(lambda: method(both, 5, chunksize).get(20))
        else:
            got = outcome(lambda: method(both, 5, chunksize))
        assert got == expected


# --------------------------------------------------------------------------
# cproc's C entry points: a wrong argument is an exception, not a crash


def test_pool_collect_checks_its_arguments(cproc):
    from cproc import _cproc
    q = _cproc.SimpleQueue()
    with pytest.raises(TypeError):
        _cproc.pool_collect(q, {}, 0)                       # the retired list is required
    with pytest.raises(TypeError):
        _cproc.pool_collect(q, {}, 0, ())
    with pytest.raises(TypeError):
        _cproc.pool_collect(q, [], 0, [])
    with pytest.raises(TypeError):
        _cproc.pool_collect(object(), {}, 0, [])
    with pytest.raises(TypeError):
        _cproc.pool_collect(q, {}, "1", [])
    with pytest.raises(ValueError):
        _cproc.pool_collect(q, {}, float("nan"), [])
    # any real number is a timeout (this one has no __index__)
    assert _cproc.pool_collect(q, {}, fractions.Fraction(1, 100), []) == 0
    assert _cproc.pool_collect(q, {}, -1, []) == 0


def test_pool_submit_checks_its_arguments(cproc):
    from cproc import _cproc
    q = _cproc.SimpleQueue()
    with pytest.raises(TypeError):
        _cproc.pool_submit(q, {}, None, 1, 0, b"", ((), {}), 1)           # 8 arguments
    with pytest.raises(ValueError, match="mode"):
        _cproc.pool_submit(q, {}, None, 1, 7, b"", ((), {}), 1, None)
    with pytest.raises(TypeError):
        _cproc.pool_submit(q, {}, None, 1, 0, b"", [(), {}], 1, None)     # (args, kwds) must be a pair
    with pytest.raises(TypeError):
        _cproc.pool_submit(q, [], None, 1, 0, b"", ((), {}), 1, None)
    cache = {}
    with pytest.raises(TypeError):
        _cproc.pool_submit(object(), cache, None, 1, 0, b"", ((), {}), 1, None)
    with pytest.raises(TypeError):
        _cproc.pool_submit(object(), cache, None, 1, 1, b"", range(600), 2, None)
    assert cache == {}, "no result waits for a task that was not queued"
    with pytest.raises(ValueError):
        _cproc.pool_submit(q, {}, None, 1, 1, b"", [1], 0, None)          # chunksize 0
    assert q.empty()


@pytest.mark.parametrize("dumped", [(b"x", 5), (b"x", (1,)), b"x", (None, None), (b"x",)])
def test_pool_submit_with_a_dumps_that_returns_garbage(cproc, dumped):
    """The task fails (delivered to its result), nothing is queued, no crash."""
    from cproc import _cproc
    q = _cproc.SimpleQueue()
    r = _cproc.ApplyResult(None)
    cache = {}
    assert _cproc.pool_submit(q, cache, r, 1, 0, b"", ((object(),), {}), 1, lambda obj: dumped) == 1
    assert r.ready() and not r.successful() and cache == {}
    with pytest.raises((SystemError, TypeError)):
        r.get(0)
    assert q.empty()


def test_pool_worker_checks_init_error(cproc):
    from cproc import _cproc
    q = _cproc.SimpleQueue()
    with pytest.raises(TypeError, match="init_error"):
        _cproc.pool_worker(q, q, bytearray(8), 0, 1, os.getpid(), "not an exception")
    with pytest.raises(ValueError):
        _cproc.pool_worker(q, q, bytearray(8), 1, 1, os.getpid(), None)  # slot out of range
    with pytest.raises(BufferError):
        _cproc.pool_worker(q, q, b"\0" * 8, 0, 1, os.getpid(), None)      # read-only slots


def test_pool_worker_in_process_runs_a_bad_apply_as_the_interpreter(cproc):
    """The worker loop, run here on one task with kwds 'ab': the result is the
    interpreter's TypeError, not a crash."""
    import pickle
    from cproc import _cproc
    tasks, results = _cproc.SimpleQueue(), _cproc.SimpleQueue()
    _cproc.pool_submit(tasks, {}, None, 1, 0, pickle.dumps(echo_call), ((), "ab"), 1, None)
    _cproc.pool_worker(tasks, results, bytearray(8), 0, 1, os.getpid(), None)
    cache, retired = {1: _cproc.ApplyResult(None)}, []
    r = cache[1]
    while not r.ready():
        _cproc.pool_collect(results, cache, 1, retired)
    assert retired == [os.getpid()], "a worker at maxtasks announces it leaves"
    expected = outcome(lambda: echo_call(**"ab"))
    assert outcome(lambda: r.get(0)) == expected


def test_result_reinitialised_is_pending_again(cproc):
    from cproc import _cproc
    r = _cproc.ApplyResult(None)
    r._deliver(0, True, 5)
    assert r.get(0) == 5
    r.__init__(None)
    assert not r.ready()
    r._deliver(0, True, 6)
    assert r.get(0) == 6
    m = _cproc.MapResult(None, 1, 2, 4)
    m._deliver(1, True, [1, 2])
    m._deliver(2, True, [3, 4])
    assert m.get(0) == [1, 2, 3, 4]
    m.__init__(None, 1, 2, 2)
    assert not m.ready()
    m._deliver(1, True, [7, 8])
    assert m.get(0) == [7, 8]


def test_result_uninitialised(cproc):
    from cproc import _cproc
    m = _cproc.MapResult.__new__(_cproc.MapResult)
    with pytest.raises(ValueError, match="not initialized"):
        m._deliver(1, True, [1])
    a = _cproc.ApplyResult.__new__(_cproc.ApplyResult)
    a._deliver(0, True, None)
    assert a.get(0) is None
    _cproc.ApplyResult.__init__(m, None)     # an ApplyResult's init on a MapResult
    with pytest.raises(ValueError, match="not initialized"):
        m._deliver(1, True, [1])


@pytest.mark.parametrize("tid, value", [(0, [1, 2]), (4, [1]), (3, [5, 6]), (1, [1]), (1, [1, 2, 3]),
                                        (1, (1, 2)), (1, "ab"), (2**63, [1, 2])])
def test_map_result_refuses_a_chunk_that_does_not_fit(cproc, tid, value):
    """MapResult(first_tid=1, chunksize=2, length=5): chunks 1, 2 (2 items), 3 (1 item)."""
    from cproc import _cproc
    m = _cproc.MapResult(None, 1, 2, 5)
    with pytest.raises((ValueError, RuntimeError)):
        m._deliver(tid, True, value)
    assert not m.ready()
    for t, chunk in ((1, [1, 2]), (2, [3, 4]), (3, [5])):
        m._deliver(t, True, chunk)
    assert m.get(0) == [1, 2, 3, 4, 5], "the refused chunk changed nothing"


def test_map_result_of_length_zero_is_ready(cproc):
    from cproc import _cproc
    assert _cproc.MapResult(None, 1, 2, 0).get(0) == []
