"""benchmarks.train_stall --output lead: the loop over ``output="lead"`` runs in a child that imports the tree it
is given, and reports what the table prints (no timing asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `benchmarks` is a folder of the repo, not installed

from benchmarks.train_stall import REPO, consume_lead, lead_table, run_lead


@pytest.fixture(scope="module")
def root(tmp_path_factory, make_built_root) -> Path:
    root = tmp_path_factory.mktemp("stall") / "data" / "carla_leaderboard2"
    make_built_root(root, 8)
    return root


def test_consume_lead_times_the_steps_it_was_asked_for(root):
    row = consume_lead(str(root), steps=3, batch_size=4, workers=2, step_ms=5.0, warmup=1)
    assert 0 <= row["data_stall_pct"] <= 100 and row["samples_per_s"] > 0 and row["peak_rss_mib"] > 0
    # 3 steps of >= 5 ms waiting each: the loop took at least 15 ms, so at most 3 steps / 15 ms
    assert row["steps_per_s"] <= 3 / 0.015
    assert row["samples_per_s"] == pytest.approx(4 * row["steps_per_s"])
    assert Path(row["leadio"]).resolve().is_relative_to(REPO)


def test_run_lead_runs_the_given_tree_in_a_child_and_the_table_shows_every_row(root):
    row = run_lead(str(root), tree=REPO, engine="this tree", steps=2, batch_size=4, workers=1, step_ms=0.0)
    assert row["engine"] == "this tree" and row["step"] == "0 ms wait" and row["steps"] == 2
    table = lead_table([row, {**row, "engine": "other", "step": "TFv6 (CPU)"}]).splitlines()
    assert len(table) == 4 and table[2].startswith("| this tree | 0 ms wait | 4 | 1 | 2 |")
    assert table[3].startswith("| other | TFv6 (CPU) |")
