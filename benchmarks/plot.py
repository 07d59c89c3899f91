"""The loader-throughput chart, drawn from the benchmark's JSON so it can be redrawn without rerunning.

    python -m benchmarks.plot benchmarks/results/loader_throughput.json [-o docs/loader_throughput.png]
                              [--caveat "machine shared with other jobs"] [--date 2026-11-25]

Linear axis (a log axis makes 451 vs 115 look like 2x), one bar per worker count, each bar labelled with its
samples/s and its ratio to leadio cpu at the same worker count; the leadio rows are highlighted. The caption
states the machine, the date and the caveats that apply, derived from the run's own record (shard count vs
workers, page cache, samples per pass, passes, notes of the rows) plus any given with ``--caveat``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

__all__ = ["caveats", "main", "plot_results"]

BASELINE = "leadio cpu"
ORDER = ("reference raw", "reference cache", "plain webdataset", "leadio cpu", "leadio dali", "decode ceiling")


def caveats(doc: dict) -> list[str]:
    """The caveats a reader of the chart must know, from the run's meta and rows."""
    meta, rows = doc.get("meta", {}), doc.get("rows", [])
    out = []
    shards, workers = meta.get("shards"), max(meta.get("workers") or [1])
    if shards is not None and shards < 2 * workers:
        out.append(f"a set of only {shards} shard{'s' if shards != 1 else ''} for up to {workers} worker(s): "
                   f"plain webdataset, which hands whole shards to workers, cannot use them all")
    if meta.get("cache_mode") == "warm":
        out.append(f"warm page cache ({meta.get('cache_why', 'files in memory')}): reads cost little")
    if meta.get("samples") is not None and meta["samples"] < 256:
        out.append(f"only {meta['samples']} samples per pass: start-up costs weigh in")
    if meta.get("passes") == 1:
        out.append("one timed pass (no median)")
    notes = sorted({n for r in rows for n in r.get("notes", [])})
    out += notes
    return out


def _machine(meta: dict) -> str:
    parts = [f"{meta['cpu_count']} cores" if meta.get("cpu_count") else None, meta.get("cpu_model"),
             meta.get("gpu") or "no GPU", f"torch {meta['torch']}" if meta.get("torch") else None]
    return ", ".join(p for p in parts if p)


def plot_results(doc: dict, path: str | Path, *, date: str | None = None, extra_caveats: Sequence[str] = ()
                 ) -> Path:
    """Draw ``doc`` (the benchmark's JSON: ``meta`` and ``rows``) to the PNG ``path``; returns it.

    Args:
        doc: ``{"meta": {...}, "rows": [{"loader", "workers", "samples_per_s", ...}]}``.
        path: where to write the PNG (atomically).
        date: the run's date (default: ``meta["date"]``, else today).
        extra_caveats: caveats not in the record (e.g. "the machine ran other jobs").
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leadio.files import atomic_write_bytes

    meta, rows = doc.get("meta", {}), doc["rows"]
    if not rows:
        raise ValueError("the benchmark JSON has no rows to plot")
    loaders = [n for n in ORDER if any(r["loader"] == n for r in rows)]
    loaders += sorted({r["loader"] for r in rows} - set(loaders))
    workers = sorted({r["workers"] for r in rows})
    by = {(r["loader"], r["workers"]): r["samples_per_s"] for r in rows}
    fig, ax = plt.subplots(figsize=(11, 5.6))
    width = 0.8 / len(workers)
    shades = ["#9ecae1", "#4292c6", "#08519c", "#08306b"]
    top = max(by.values())
    for j, w in enumerate(workers):
        for i, name in enumerate(loaders):
            y = by.get((name, w))
            if y is None:
                continue
            lead = name.startswith("leadio")
            colour = ["#fdae6b", "#e6550d", "#a63603", "#7f2704"][j % 4] if lead else shades[j % 4]
            x = i + (j - (len(workers) - 1) / 2) * width
            ax.bar(x, y, width * 0.95, color=colour, edgecolor="black" if name == BASELINE else "none",
                   linewidth=1.6, label=f"{w} worker{'s' if w > 1 else ''}" if i == 0 else None)
            base = by.get((BASELINE, w))
            ratio = f"\n{y / base:.2f}×" if base else ""
            ax.text(x, y + top * 0.01, f"{y:.0f}{ratio}", ha="center", va="bottom", fontsize=7.5,
                    weight="bold" if lead else "normal")
    ax.set_xticks(range(len(loaders)), [textwrap.fill(name, 14) for name in loaders])  # no overlapping names
    for label in ax.get_xticklabels():
        if label.get_text().startswith("leadio"):
            label.set_fontweight("bold")
            label.set_color("#a63603")
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel("samples / s (linear)")
    ax.set_title(f"Loader throughput: {meta.get('samples', '?')} samples, batch {meta.get('batch_size', '?')}, "
                 f"median of {meta.get('passes', '?')} pass(es); label: samples/s and × {BASELINE} "
                 f"(same workers)", fontsize=9.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=shades[j % 4]) for j in range(len(workers))]
    ax.legend(handles, [f"{w} worker{'s' if w > 1 else ''} (leadio rows in orange)" for w in workers], fontsize=8,
              loc="upper left")
    when = date or meta.get("date") or dt.date.today().isoformat()
    notes = caveats(doc) + list(extra_caveats)
    caption = f"Machine: {_machine(meta)}. Date: {when}. Page cache: {meta.get('cache_mode', '?')}. " + (
        "Caveats: " + "; ".join(notes) + "." if notes else "No caveats recorded.")
    wrapped = textwrap.fill(caption, 150)
    fig.text(0.01, 0.01, wrapped, fontsize=7.5, va="bottom", ha="left")
    fig.tight_layout(rect=(0, 0.035 + 0.018 * wrapped.count("\n"), 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("json", help="the benchmark's JSON (benchmarks/results/loader_throughput.json)")
    parser.add_argument("-o", "--out", default=None, help="PNG to write (default: the JSON's path with .png)")
    parser.add_argument("--date", default=None, help="date of the run (default: meta.date, else the JSON's "
                                                       "modification date)")
    parser.add_argument("--caveat", action="append", default=[], help="an extra caveat for the caption; repeatable")
    args = parser.parse_args(argv)
    src = Path(args.json)
    try:
        doc = json.loads(src.read_text())
        date = args.date or doc.get("meta", {}).get("date") or dt.date.fromtimestamp(src.stat().st_mtime).isoformat()
        out = plot_results(doc, args.out or src.with_suffix(".png"), date=date, extra_caveats=args.caveat)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: cannot plot {src}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
