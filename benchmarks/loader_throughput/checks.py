"""The fairness checks: a few samples of every row compared with leadio cpu's (``rgb`` within ``RGB_ATOL``,
everything else exact) before anything is timed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.loader_throughput.bench import BASELINE, LEAD_ROWS, RGB_ATOL, Bench, ceiling_bytes
from benchmarks.loader_throughput.rows import LoaderRow, make_row, quiet_collate_warning
from leadio.decode.cpu import decode_batch
from leadio.lead import to_lead_batch
from leadio.schema import DEFAULT_KEYS, members_for_keys


# ----------------------------------------------------------------------------------------------- checks
def load_samples(bench: Bench, name: str, workers: int = 1, *, lead: bool = False) -> dict[int, dict[str, np.ndarray]]:
    """Every chosen sample as row ``name`` delivers it: catalog row -> key -> array.

    Loaders run with ``workers`` DataLoader workers (default 1: the reference rows read LAZ files, which must
    not happen in this process before it forks the timed rows' workers); the ceilings decode here. ``lead``:
    each batch through `to_lead_batch` first (the reference of the LEAD rows). The LEAD timing keys
    (``loading_*``) are left out."""
    if name == "lead ceiling":
        return load_samples(bench, "decode ceiling", workers, lead=True)
    if name == "decode ceiling":
        members = members_for_keys(DEFAULT_KEYS, bench.shard_set.layout)
        raw_samples = ceiling_bytes(bench)
        raw: dict[str, Any] = {n: [s[n] for s in raw_samples] for n in members}
        raw["row"], raw["view"] = np.array(bench.rows), np.zeros(len(bench.rows), np.uint8)
        batch, failures = decode_batch(raw, members)
        if failures:
            raise RuntimeError(f"decode ceiling: samples do not decode: {failures}")
        batches = [{k: torch.from_numpy(v) for k, v in batch.items()}]
    else:
        with warnings.catch_warnings():
            quiet_collate_warning()
            row = make_row(bench, name, workers)
            assert isinstance(row, LoaderRow)
            try:
                batches = list(row.batches())
            finally:
                row.close()
    if lead:
        batches = [{"row": b["row"], **to_lead_batch(b)} for b in batches]
    out: dict[int, dict[str, np.ndarray]] = {}
    for batch in batches:
        batch = {k: v for k, v in batch.items() if not k.startswith("loading")}
        for i, r in enumerate(batch["row"].tolist()):
            out[int(r)] = {k: v[i].cpu().numpy() for k, v in batch.items() if isinstance(v, torch.Tensor)}
    return out


def compare_samples(got: dict[int, dict[str, np.ndarray]], ref: dict[int, dict[str, np.ndarray]]
                    ) -> tuple[bool, dict[str, float], list[str]]:
    """Compare per-sample arrays with the reference: (ok, max abs diff per key, problems).

    ``rgb`` may differ by `RGB_ATOL`; everything else must be equal (same dtype and shape, NaN == NaN)."""
    problems: list[str] = []
    diffs: dict[str, float] = {}
    if set(got) != set(ref):
        problems.append(f"samples differ: missing {sorted(set(ref) - set(got))}, extra {sorted(set(got) - set(ref))}")
    for r in sorted(set(got) & set(ref)):
        a, b = got[r], ref[r]
        if set(a) != set(b):
            problems.append(f"row {r}: keys differ: missing {sorted(set(b) - set(a))}, extra {sorted(set(a) - set(b))}")
        for k in sorted(set(a) & set(b)):
            x, y = a[k], b[k]
            if x.dtype != y.dtype or x.shape != y.shape:
                problems.append(f"row {r} {k}: {x.dtype}{x.shape} vs {y.dtype}{y.shape}")
                continue
            xf, yf = x.astype(np.float64), y.astype(np.float64)
            nan = np.isnan(xf) | np.isnan(yf)
            if not np.array_equal(np.isnan(xf), np.isnan(yf)):
                problems.append(f"row {r} {k}: NaN in different places")
            d = float(np.abs(xf - yf)[~nan].max(initial=0.0))
            diffs[k] = max(diffs.get(k, 0.0), d)
            if d > (RGB_ATOL if k == "rgb" else 0):
                problems.append(f"row {r} {k}: max abs diff {d}")
    return not problems, {k: v for k, v in diffs.items() if v}, problems


def check_rows(bench: Bench, names: Sequence[str]) -> dict[str, dict]:
    """Compare every row's tensors for ``bench``'s samples with leadio cpu's: name -> {ok, max_abs_diff, ...}."""
    ref = load_samples(bench, BASELINE)
    ref_lead = load_samples(bench, BASELINE, lead=True) if set(names) & set(LEAD_ROWS) else {}
    report = {}
    for name in names:
        ok, diffs, problems = compare_samples(load_samples(bench, name), ref_lead if name in LEAD_ROWS else ref)
        report[name] = {"ok": ok, "samples": len(ref), "max_abs_diff": diffs, "problems": problems[:10]}
    return report
