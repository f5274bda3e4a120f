#!/usr/bin/env python3
"""Time cproc against multiprocessing, side by side, in one run.

    python benchmarks/run.py                 # all cases, 7 rounds, writes RESULTS.md
    python benchmarks/run.py --quick         # 3 rounds, smaller sizes (smoke test)
    python benchmarks/run.py --only Lock     # cases whose name or module matches
    python benchmarks/run.py --skip dask     # all cases but those
    python benchmarks/run.py --json raw.json # also dump every per-round time
    python benchmarks/run.py --candidate multiprocessing   # self-check: ratios ~1.0
    python benchmarks/run.py --list          # list the registered cases
    python benchmarks/run.py --plot chart.png  # also draw the chart (matplotlib)
    python benchmarks/run.py --matrix        # cross-process cases under all four placements

For every case the implementations are alternated within each round
(multiprocessing, cproc[, peers...], multiprocessing, cproc, ...) after one
untimed warm-up run each, with the garbage collector disabled during each run.
The reported time per implementation is the median over rounds, and the ratio
is median(cproc) / median(multiprocessing): lower is faster. Cases come from
the ``cases_*.py`` modules next to this file (see harness.py to add one).

The Markdown table is printed to stdout and, for a full run (no --only, no
--quick, default candidate), written to benchmarks/RESULTS.md; pass --output
to write it in other cases. Text below the marker line in an existing output
file (hand-written analysis of missed targets) is kept.

Placement (``--placement``, see harness.PLACEMENTS) says which CPUs the
benchmark and the processes it forks run on: ``split`` (the default) pins the
two sides of a cross-process case to different CPUs; ``same`` pins every
process to one CPU; ``none`` pins nothing; ``loaded`` is ``split`` with two
busy processes competing for the CPUs. With several placements (``--matrix``
is all four), every case runs under the first and the cross-process cases
under each other one too; the output adds a table of the ratios per
placement.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import gc
import glob
import importlib
import json
import os
import platform
import signal
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import PLACEMENTS, BenchTimeout, Placement  # noqa: E402

REFERENCE = "multiprocessing"
DEFAULT_OUTPUT = os.path.join(HERE, "RESULTS.md")
KEEP_MARKER = ("<!-- Everything below this line is kept when run.py rewrites "
               "this file: explain missed targets here. -->")


# --------------------------------------------------------------------------
# Discovery and imports


def load_cases():
    mods = []
    for path in glob.glob(os.path.join(HERE, "cases_*.py")):
        name = os.path.splitext(os.path.basename(path))[0]
        mods.append(importlib.import_module(name))
    mods.sort(key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
    order = {m.__name__: i for i, m in enumerate(mods)}
    # registration order within a module, modules by ORDER then name
    return sorted(harness.CASES, key=lambda c: order.get(c.group, len(order)))


def import_candidate(name):
    """Import the module under test; fall back to the source tree for cproc."""
    try:
        mod = importlib.import_module(name)
    except ImportError as exc:
        first_error = exc
        mod = None
    else:
        if getattr(mod, "__file__", None) is not None:
            return mod
        first_error = ImportError(f"{name} resolved to a namespace package "
                                  f"(no __init__.py): {list(mod.__path__)}")
        del sys.modules[name]
    # e.g. an in-place build in the source tree
    for root in (os.path.join(REPO, "src"), REPO):
        if root in sys.path or not os.path.isdir(root):
            continue
        sys.path.append(root)
        try:
            mod = importlib.import_module(name)
            if getattr(mod, "__file__", None) is not None:
                return mod
            del sys.modules[name]
        except ImportError:
            pass
        finally:
            sys.path.remove(root)
    raise SystemExit(f"run.py: cannot import candidate {name!r}: {first_error}\n"
                     f"(install it first, e.g. `pip install .` in {REPO})")


def module_desc(mod):
    version = getattr(mod, "__version__", None)
    where = getattr(mod, "__file__", None) or "?"
    return f"{mod.__name__}{' ' + version if version else ''} ({where})"


# --------------------------------------------------------------------------
# Timing


def _on_alarm(signum, frame):
    raise BenchTimeout("run exceeded the --timeout")


def timed_call(run, mod, size, timeout):
    if Placement.active is not None:
        Placement.active.new_run()
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        elapsed = run(mod, size)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if was_enabled:
            gc.enable()
    if not isinstance(elapsed, (int, float)) or not elapsed > 0:
        raise TypeError(f"case returned {elapsed!r}, expected seconds > 0")
    return float(elapsed)


def describe_error(exc):
    text = f"{type(exc).__name__}: {exc}".strip()
    text = " ".join(text.split())
    return text if len(text) <= 160 else text[:157] + "..."


def run_case(c, cand_label, cand_mod, peer_mods, rounds, quick, timeout,
             warmup, order, progress):
    size = c.size_for(quick)
    impls = [(REFERENCE, REF_MOD, c.run), (cand_label, cand_mod, c.run)]
    for peer in c.peers:
        if peer.label in peer_mods and not isinstance(peer_mods[peer.label], str):
            impls.append((peer.label, peer_mods[peer.label], peer.run or c.run))
    times = {label: [] for label, _, _ in impls}
    errors = {}

    def attempt(label, mod, run, n):
        try:
            return timed_call(run, mod, n, timeout)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - report, keep going
            errors[label] = describe_error(exc)
            return None

    essential = (REFERENCE, cand_label)
    if warmup:
        for label, mod, run in impls:
            attempt(label, mod, run, size)
    for r in range(rounds):
        if any(label in errors for label in essential):
            break
        # "swap": every other round runs the implementations in reverse order,
        # so a drift during the case (allocator, page cache, CPU clock) does
        # not favour whichever implementation always runs second.
        ordered = impls[::-1] if order == "swap" and r % 2 else impls
        for label, mod, run in ordered:
            if label in errors:
                continue
            t = attempt(label, mod, run, size)
            if t is not None:
                times[label].append(t)
        progress(".")
    res = {
        "name": c.name, "group": c.group, "size": size,
        "work": c.describe(size), "target": c.target, "note": c.note,
        "times": times, "errors": errors, "peers": [],
    }
    res.update(compare(times.get(REFERENCE), times.get(cand_label), c.target,
                       errors, essential))
    for peer in c.peers:
        entry = {"label": peer.label, "module": peer.module,
                 "target": peer.target, "floor": peer.floor}
        loaded = peer_mods.get(peer.label)
        if isinstance(loaded, str) or loaded is None:
            entry["skipped"] = loaded or "not loaded"
        else:
            entry.update(compare(times.get(peer.label), times.get(cand_label),
                                 peer.target, errors, (peer.label, cand_label)))
            if peer.floor and times.get(peer.label) and times.get(REFERENCE):
                entry["floor_ratio"] = (statistics.median(times[peer.label])
                                        / statistics.median(times[REFERENCE]))
        res["peers"].append(entry)
    return res


def compare(base, cand, target, errors, labels):
    """Median ratio cand/base, range of per-round ratios, status vs target."""
    out = {}
    errs = [f"{lab}: {errors[lab]}" for lab in labels if lab in errors]
    if errs or not base or not cand:
        out["status"] = "error"
        out["error"] = "; ".join(errs) or "no successful rounds"
        return out
    out["base_median"] = statistics.median(base)
    out["cand_median"] = statistics.median(cand)
    out["ratio"] = out["cand_median"] / out["base_median"]
    per_round = [c / b for b, c in zip(base, cand)]
    out["ratio_min"], out["ratio_max"] = min(per_round), max(per_round)
    if target is None:
        out["status"] = "report"
    else:
        out["status"] = "met" if out["ratio"] <= target else "missed"
    return out


# --------------------------------------------------------------------------
# Reporting


def fmt_time(seconds):
    if seconds is None:
        return "—"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def fmt_target(t):
    return "—" if t is None else f"≤ {t:g}"


STATUS = {"met": "met", "missed": "**missed**", "report": "report only",
          "error": "**error**"}


def md_escape(text):
    return text.replace("|", "\\|")


def render(results, meta):
    cand = meta["candidate_label"]
    lines = []
    lines.append("# cproc benchmarks")
    lines.append("")
    lines.append(f"Generated by `{meta['command']}` on {meta['date']}.")
    lines.append("")
    lines.append(f"- Python {meta['python']} ({meta['implementation']}), "
                 f"{meta['platform']}")
    lines.append(f"- Machine: {meta['cpu_count']} cores "
                 f"({meta['usable_cores']} usable by this process), "
                 f"{meta['cpu_model']}; load average at start "
                 f"{meta['loadavg']}")
    lines.append(f"- Candidate: {meta['candidate']}")
    lines.append(f"- Reference: {meta['reference']}")
    lines.append(f"- Rounds: {meta['rounds']} per case"
                 f"{' (--quick sizes)' if meta['quick'] else ''}; "
                 f"total wall time {meta['wall']:.0f} s")
    first = meta["placements"][0]
    lines.append(f"- Placement of the table below: {first} "
                 f"({PLACEMENTS[first]})")
    lines.append("")
    if meta["order"] == "swap":
        alternation = (f"alternating ({REFERENCE}, {cand}, peers… in one "
                       "round, the reverse order in the next)")
    else:
        alternation = f"alternating ({REFERENCE}, {cand}, peers…)"
    lines.append(f"Ratio = {cand} time / {REFERENCE} time for the same work "
                 "(lower = faster). Each round runs every implementation once, "
                 f"{alternation}, after one untimed full-size warm-up run "
                 "each; the GC is disabled during each run and "
                 "only the measured work is timed (setup such as creating "
                 "objects or forking helpers is excluded). Times are medians "
                 "over rounds and the ratio is the ratio of the medians; "
                 "brackets give the min–max of the per-round ratios. This is "
                 "a shared, noisy machine: read ratios near the target as "
                 "approximate.")
    lines.append("")
    lines.append(f"| Case | Work per round | {REFERENCE} | {cand} | "
                 "ratio | target | result |")
    lines.append("|---|---|---:|---:|---:|---:|---|")
    notes = []
    for r in results:
        lines.append(row(r["name"], r["work"], r, r["target"]))
        for p in r["peers"]:
            name = f"↳ against {p['label']} ({cand} / {p['label']})"
            if "skipped" in p:
                lines.append(f"| {md_escape(name)} | | | | | "
                             f"{fmt_target(p['target'])} | skipped |")
                notes.append(f"*{r['name']}*: peer {p['label']} skipped "
                             f"({p['skipped']}).")
            else:
                lines.append(row(name, "", p, p["target"],
                                 base_label=p["label"]))
                if p["status"] == "error" and r["status"] != "error":
                    notes.append(f"*{r['name']}* against {p['label']}: "
                                 f"{p['error']}")
        if r["status"] == "error":
            notes.append(f"*{r['name']}*: {r['error']}")
        if r["status"] != "met":
            floors = [f"{p['label']} / {REFERENCE} = {p['floor_ratio']:.2f} "
                      "here, about the lowest ratio any implementation can "
                      "reach." for p in r["peers"] if "floor_ratio" in p]
            if r["note"] or floors:
                notes.append(f"*{r['name']}*: " + " ".join([r["note"]] + floors)
                             .strip())
    if notes:
        lines.append("")
        lines.append("Notes:")
        lines.append("")
        lines.extend(f"- {n}" for n in notes)
    met = sum(r["status"] == "met" for r in results)
    targeted = sum(r["target"] is not None for r in results)
    lines.append("")
    lines.append(f"Targets met: {met} of {targeted}.")
    if len(meta["placements"]) > 1:
        lines.append("")
        lines.extend(render_matrix(meta["matrix"], meta["placements"], cand))
    return "\n".join(lines) + "\n"


def geomean(values):
    import math
    return math.exp(sum(math.log(v) for v in values) / len(values))


def render_matrix(matrix, placements, cand):
    """The ratio of every cross-process case under every placement."""
    lines = ["## Placement matrix", "",
             f"Ratio {cand} / {REFERENCE} (median of the rounds; brackets: "
             f"{REFERENCE}'s median time) of every cross-process case under "
             "each placement; “worst” is the highest ratio of the row. "
             "Placements:", ""]
    lines.extend(f"- **{p}**: {PLACEMENTS[p]}." for p in placements)
    lines.append("")
    lines.append("| Case | " + " | ".join(placements) + " | worst | target |")
    lines.append("|---|" + "---:|" * (len(placements) + 2))
    cols = {p: [] for p in placements}
    names = [r["name"] for r in matrix[placements[0]]
             if r.get("matrix", True)]
    for name in names:
        cells, ratios, target = [], [], None
        for p in placements:
            r = next((x for x in matrix[p] if x["name"] == name), None)
            if r is None or r["status"] == "error":
                cells.append("error" if r is not None else "—")
                continue
            target = r["target"]
            ratios.append(r["ratio"])
            cols[p].append(r["ratio"])
            cells.append(f"**{r['ratio']:.2f}** ({fmt_time(r['base_median'])})")
        worst = f"**{max(ratios):.2f}**" if ratios else "—"
        lines.append(f"| {md_escape(name)} | " + " | ".join(cells)
                     + f" | {worst} | {fmt_target(target)} |")
    gm = [f"**{geomean(cols[p]):.2f}**" if cols[p] else "—"
          for p in placements]
    worst_gm = max((geomean(v) for v in cols.values() if v), default=None)
    lines.append("| geometric mean | " + " | ".join(gm) + " | "
                 + (f"**{worst_gm:.2f}**" if worst_gm else "—") + " | |")
    above = sum(1 for v in cols.values() for x in v if x > 1.0)
    lines.append("")
    lines.append(f"Ratios above 1.0 (slower than {REFERENCE}): {above}.")
    return lines


def row(name, work, r, target, base_label=None):
    if r["status"] == "error":
        return (f"| {md_escape(name)} | {md_escape(work)} | — | — | — | "
                f"{fmt_target(target)} | {STATUS['error']} |")
    base = fmt_time(r["base_median"])
    if base_label:
        base = f"{base_label}: {base}"
    ratio = (f"**{r['ratio']:.2f}** ({r['ratio_min']:.2f}–"
             f"{r['ratio_max']:.2f})")
    return (f"| {md_escape(name)} | {md_escape(work)} | {base} | "
            f"{fmt_time(r['cand_median'])} | {ratio} | {fmt_target(target)} "
            f"| {STATUS[r['status']]} |")


def write_output(path, text):
    kept = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
        if KEEP_MARKER in old:
            kept = old.split(KEEP_MARKER, 1)[1].lstrip("\n")
    body = text + "\n## Analysis\n\n" + KEEP_MARKER + "\n"
    if kept:
        body += "\n" + kept
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(body)
    os.replace(tmp, path)


def shm_entries():
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


# --------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Time cproc against multiprocessing (alternating rounds, "
                    "median ratios).")
    ap.add_argument("--rounds", type=int, default=None,
                    help="rounds per case (default 7, or 3 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="3 rounds and smaller sizes (smoke test)")
    ap.add_argument("--only", action="append", metavar="SUBSTR", default=[],
                    help="run only cases whose name or module contains SUBSTR "
                         "(case-insensitive; repeatable)")
    ap.add_argument("--skip", action="append", metavar="SUBSTR", default=[],
                    help="leave out cases whose name or module contains SUBSTR "
                         "(case-insensitive; repeatable)")
    ap.add_argument("--candidate", default="cproc", metavar="MODULE",
                    help="module compared against multiprocessing "
                         "(default cproc; 'multiprocessing' for a self-check)")
    ap.add_argument("--json", metavar="FILE",
                    help="also dump raw per-round times to FILE")
    ap.add_argument("--output", metavar="FILE",
                    help="write the Markdown table here (default: "
                         "benchmarks/RESULTS.md, for full runs only)")
    ap.add_argument("--no-write", action="store_true",
                    help="do not write any Markdown file")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds allowed for one run of one case (default 60)")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the untimed warm-up run")
    ap.add_argument("--order", choices=("swap", "fixed"), default="swap",
                    help="'swap' (default): alternate mp, cproc, then cproc, "
                         "mp in the next round, and so on; 'fixed': always "
                         "mp, cproc")
    ap.add_argument("--list", action="store_true",
                    help="list the cases and exit")
    ap.add_argument("--plot", metavar="FILE.png",
                    help="also draw the ratios as a bar chart (needs matplotlib)")
    ap.add_argument("--placement", default="split", metavar="P[,P...]",
                    help="where the processes run: " + ", ".join(
                        f"'{k}' ({v})" for k, v in PLACEMENTS.items())
                    + "; several, comma-separated, make a placement matrix "
                      "(default: split)")
    ap.add_argument("--matrix", action="store_true",
                    help="shorthand for --placement " + ",".join(PLACEMENTS))
    args = ap.parse_args(argv)
    placements = (list(PLACEMENTS) if args.matrix
                  else [p.strip() for p in args.placement.split(",") if p.strip()])
    for p in placements:
        if p not in PLACEMENTS:
            ap.error(f"unknown placement {p!r} (choose from {', '.join(PLACEMENTS)})")
    if not placements or len(set(placements)) != len(placements):
        ap.error("--placement needs distinct placements")
    if not hasattr(os, "sched_setaffinity"):
        ap.error("placements need os.sched_setaffinity (Linux)")

    rounds = args.rounds or (3 if args.quick else 7)
    if rounds < 1:
        ap.error("--rounds must be >= 1")

    faulthandler.enable()  # a crash in a C extension still says where
    global REF_MOD
    REF_MOD = importlib.import_module(REFERENCE)

    cases = load_cases()
    if args.only:
        subs = [s.lower() for s in args.only]
        cases = [c for c in cases
                 if any(s in c.name.lower() or s in c.group.lower()
                        for s in subs)]
    if args.skip:
        subs = [s.lower() for s in args.skip]
        cases = [c for c in cases
                 if not any(s in c.name.lower() or s in c.group.lower()
                            for s in subs)]
    if args.list:
        for c in cases:
            peers = ", ".join(p.label for p in c.peers)
            print(f"{c.group:>14}  {fmt_target(c.target):>7}  {c.name}  "
                  f"[{c.describe(c.size_for(args.quick))}]"
                  f"{'  peers: ' + peers if peers else ''}")
        return 0
    if not cases:
        ap.error("no case matches --only " + " ".join(args.only))

    cand_mod = import_candidate(args.candidate)
    cand_label = args.candidate
    if cand_mod is REF_MOD:
        cand_label = f"{REFERENCE} (as candidate)"

    peer_mods = {}
    for c in cases:
        for p in c.peers:
            if p.label in peer_mods:
                continue
            try:
                peer_mods[p.label] = importlib.import_module(p.module)
            except Exception as exc:  # noqa: BLE001
                peer_mods[p.label] = f"not importable: {describe_error(exc)}"

    def progress(s):
        sys.stderr.write(s)
        sys.stderr.flush()

    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    usable = sorted(os.sched_getaffinity(0))
    shm_before = shm_entries()
    started = time.perf_counter()
    progress(f"candidate {module_desc(cand_mod)}; {rounds} rounds\n")
    matrix = {}
    for i, placement in enumerate(placements):
        progress(f"placement {placement}: {PLACEMENTS[placement]}\n")
        results = matrix[placement] = []
        with Placement(placement, usable):
            for c in cases:
                if i > 0 and not c.matrix:
                    continue
                progress(f"  {c.name} [{c.describe(c.size_for(args.quick))}] ")
                t0 = time.perf_counter()
                res = run_case(c, cand_label, cand_mod, peer_mods, rounds,
                               args.quick, args.timeout, not args.no_warmup,
                               args.order, progress)
                res["matrix"] = c.matrix
                if res["status"] == "error":
                    progress(f" error: {res['error']}\n")
                else:
                    progress(f" ratio {res['ratio']:.2f} ({res['status']}, "
                             f"{time.perf_counter() - t0:.1f} s)\n")
                results.append(res)
    results = matrix[placements[0]]
    wall = time.perf_counter() - started
    leftover = shm_entries() - shm_before
    if leftover:  # informational: other processes may use /dev/shm too
        progress(f"note: {len(leftover)} new /dev/shm entries since the start "
                 f"(e.g. {sorted(leftover)[0]})\n")

    meta = {
        "command": "python benchmarks/run.py"
                   + ("" if not sys.argv[1:] else " " + " ".join(sys.argv[1:])),
        "date": datetime.datetime.now(datetime.timezone.utc)
                        .strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(usable),
        "cpu_model": cpu_model(),
        "loadavg": " ".join(f"{x:.2f}" for x in load) or "n/a",
        "candidate": module_desc(cand_mod),
        "candidate_label": cand_label,
        "reference": module_desc(REF_MOD),
        "rounds": rounds,
        "quick": args.quick,
        "order": args.order,
        "wall": wall,
        "placements": placements,
        "matrix": matrix,
    }
    text = render(results, meta)
    sys.stdout.write("\n" + text)

    partial = (bool(args.only) or bool(args.skip) or args.quick
               or args.candidate != "cproc")
    out = args.output
    if out is None and not partial:
        out = DEFAULT_OUTPUT
    if args.no_write:
        out = None
    if out:
        write_output(out, text)
        progress(f"wrote {out}\n")
    else:
        progress("(Markdown not written: partial, quick or non-cproc run; "
                 "pass --output FILE to write it)\n")
    if args.plot:
        from plot import plot
        if plot(results, args.plot, REFERENCE, cand_label):
            progress(f"wrote {args.plot}\n")
        else:
            progress(f"chart not drawn: matplotlib is not installed "
                     f"(pip install matplotlib), so {args.plot} was not written\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"meta": meta, "cases": results}, f, indent=1)
        progress(f"wrote {args.json}\n")
    return 0


REF_MOD = None

if __name__ == "__main__":
    sys.exit(main())
