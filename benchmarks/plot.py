"""The benchmark chart: one bar per case, cproc's time as a fraction of
multiprocessing's (log scale: 1 = as fast, 0.1 = ten times faster), with the
case's target marked and the peers (faster-fifo, loky, mpire) beside it.

Used by run.py --plot FILE (and so by ``python -m cproc bench --plot FILE``);
needs matplotlib, which is optional: without it, plot() says so and returns
False.
"""

from __future__ import annotations

import statistics


def _median_ratio(times, num, den):
    a, b = times.get(num), times.get(den)
    if not a or not b:
        return None
    return statistics.median(a) / statistics.median(b)


def plot(results, path, reference, candidate):
    """Write the chart of run.py's results to path; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    rows = [r for r in results if r.get("ratio") is not None]
    peer_labels = sorted({p["label"] for r in rows for p in r.get("peers", ())
                          if _median_ratio(r["times"], p["label"], reference)})
    series = [(f"{candidate} / {reference}", candidate)] + \
             [(f"{label} / {reference}", label) for label in peer_labels]
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(11, 0.42 * len(rows) + 1.6))
    for k, (label, impl) in enumerate(series):
        ys, xs = [], []
        for i, r in enumerate(rows):
            ratio = _median_ratio(r["times"], impl, reference)
            if ratio is not None:
                ys.append(i + k * height)
                xs.append(ratio)
        ax.barh(ys, xs, height=height, label=label)
    for i, r in enumerate(rows):
        if r.get("target"):
            ax.plot([r["target"]] * 2, [i - height / 2, i + 0.8 - height / 2], color="black", lw=1)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(rows))])
    ax.set_yticklabels([r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"time relative to {reference} (log scale; lower is faster; black tick: target)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
