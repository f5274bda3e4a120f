"""Pool.imap / imap_unordered drive a tqdm progress bar to completion.

The usual notebook and script idiom::

    for result in tqdm(pool.imap(f, items), total=len(items)):
        ...

(or ``bar.update()`` per result of imap_unordered).  The bar writes to an
io.StringIO; with mininterval=0 and miniters=1 it draws a frame per result, so
the frames must count 0, 1, ..., n in order and the last one must read "n/n"
at 100%.  Differential: multiprocessing's fork Pool must do the same.
"""

import io
import re

import pytest

tqdm = pytest.importorskip("tqdm").tqdm

pytestmark = pytest.mark.timeout(60)

N = 20


def cube(x):
    return x ** 3


def _bar(buf, **kwargs):
    # ascii bar, fixed width, a frame for every result
    return tqdm(file=buf, ascii=True, ncols=80, mininterval=0, miniters=1, **kwargs)


def _frames(buf):
    """The frames tqdm drew, in order (each redraw starts with a carriage return)."""
    return [frame.strip() for frame in re.split(r"[\r\n]", buf.getvalue()) if frame.strip()]


def _check_bar(buf, n):
    frames = _frames(buf)
    assert frames, "tqdm drew nothing"
    counts = []
    for frame in frames:
        m = re.search(r"\b(\d+)/(\d+)\b", frame)
        assert m, f"no n/total in frame {frame!r}"
        assert int(m.group(2)) == n, frame
        counts.append(int(m.group(1)))
    # every step drawn, in order (the closing frame repeats the last one)
    assert sorted(set(counts)) == list(range(n + 1)), counts
    assert counts == sorted(counts), counts
    last = frames[-1]
    assert f"{n}/{n}" in last and "100%" in last, last


def _collect(pool, method, style, fn, items, chunksize, buf):
    it = getattr(pool, method)(fn, items, chunksize)
    results = []
    if style == "wrap":
        for r in _bar(buf, iterable=it, total=len(items)):
            results.append(r)
    else:
        with _bar(buf, total=len(items)) as bar:
            for r in it:
                results.append(r)
                bar.update()
    return results


@pytest.mark.parametrize("chunksize", [1, 3])
@pytest.mark.parametrize("style", ["wrap", "update"])
@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_drives_tqdm(mp, method, style, chunksize):
    items = list(range(N))
    buf = io.StringIO()
    with mp.Pool(2) as pool:
        results = _collect(pool, method, style, cube, items, chunksize, buf)
    expected = [cube(x) for x in items]
    if method == "imap":
        assert results == expected
    else:
        assert sorted(results) == expected
    _check_bar(buf, N)


@pytest.mark.parametrize("method", ["imap", "imap_unordered"])
def test_imap_lambda_drives_tqdm(cproc, method):
    """cproc: the mapped function may be a lambda (cloudpickle fallback)."""
    buf = io.StringIO()
    with cproc.Pool(2) as pool:
        results = list(_bar(buf, iterable=getattr(pool, method)(lambda x: x * 2, range(N)), total=N))
    assert sorted(results) == [2 * x for x in range(N)]
    if method == "imap":
        assert results == [2 * x for x in range(N)]
    _check_bar(buf, N)
