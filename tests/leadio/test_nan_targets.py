"""Frames without planning targets (near a route end), as README, `leadio.schema` and docs/format.md §4.8
document them. Expectations come from the raw metas (future lengths, route points), not from leadio's code."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from leadio.catalog_store import load_catalog
from leadio.format.frame import read_meta
from leadio.format.routes import discover_routes
from leadio.preprocess import targets_record
from leadio.schema import EXTRA_TARGETS, TARGET_FIELDS, TARGET_RECORD_BYTES

NEEDED_FUTURE = 41  # ticks 0..40: the last waypoint is 40 ticks (2 s) ahead
NAN_WITHOUT_TARGETS = {"waypoints", "waypoint_yaws"}  # route too, but only when it cannot be resampled


@pytest.fixture(scope="module")
def pretrain_set(tmp_path_factory, make_built_root):
    root = tmp_path_factory.mktemp("nan") / "data" / "carla_leaderboard2"
    return root, make_built_root(root, 16)


def _expected(root) -> tuple[dict[tuple[str, int], bool], dict[str, int]]:
    """(route, frame) -> has targets for every frame of every kept route, from the metas alone; frames per route."""
    out, frames = {}, {}
    for info in discover_routes(root):
        if not info.trainable:
            continue
        frames[info.rel_path] = info.num_frames
        for f in range(info.num_frames):
            meta = read_meta(root / info.rel_path, f)
            future = min(len(meta["future_positions"]), len(meta["future_yaws"]))
            route = np.asarray(meta["route"], np.float64).reshape(-1, 2)[:20]
            assert len(np.unique(route, axis=0)) >= 2  # the synthetic route always resamples: a real route
            out[(info.rel_path, f)] = future >= NEEDED_FUTURE
    return out, frames


def _epoch(set_dir, collection: str, perturbation_rate: float) -> dict[str, np.ndarray]:
    from leadio.dataset import open_dataset

    loader = open_dataset(set_dir, collection=collection, keys=["targets"], batch_size=1, backend="cpu",
                          world_size=1, rank=0, num_workers=0, perturbation_rate=perturbation_rate)
    batches = list(loader)
    return {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}


@pytest.mark.parametrize("view", [0, 1])
def test_has_targets_zero_exactly_near_the_route_end_with_only_waypoints_nan(pretrain_set, view):
    root, set_dir = pretrain_set
    expected, frames = _expected(root)
    cat = load_catalog(set_dir)
    got = _epoch(set_dir, "full_pretrain", perturbation_rate=float(view))
    assert (got["view"] == view).all()
    keys = [(str(cat["route"][r]), int(cat["frame"][r])) for r in got["row"]]
    assert sorted(keys) == sorted((r, f) for r, f in expected if 1 <= f < frames[r] - 1)  # each sample once
    has = got["has_targets"]
    assert set(np.unique(has).tolist()) == {0.0, 1.0}
    assert [bool(h) for h in has] == [expected[k] for k in keys]

    # the documented count: the frames with fewer than 41 future positions, the last 8 of each route; the
    # pretrain collection skips the very last frame, so 7 per kept route
    without = sorted(k for k, h in zip(keys, has, strict=True) if h == 0)
    assert without == [(r, f) for r in sorted(frames) for f in range(frames[r] - 8, frames[r] - 1)]
    assert len(without) == 7 * len(frames) > 0

    for name, shape in TARGET_FIELDS:
        values = got[name].reshape(len(keys), -1)
        nan = np.isnan(values)
        if name in NAN_WITHOUT_TARGETS:
            assert nan[has == 0].all(), name  # every element, not some
            assert not nan[has == 1].any(), name
        else:  # route included: these synthetic routes always resample
            assert not nan.any(), f"{name} has NaN in {int(nan.any(1).sum())} samples"
        assert got[name].shape == (len(keys), *shape)


def test_posttrain_over_the_pretrain_set_never_draws_a_frame_without_targets(pretrain_set):
    root, set_dir = pretrain_set
    _, frames = _expected(root)
    got = _epoch(set_dir, "full_posttrain", perturbation_rate=0.5)
    assert len(got["row"]) == sum(n - 16 for n in frames.values())
    assert (got["has_targets"] == 1).all()
    assert not any(np.isnan(got[name]).any() for name, _ in TARGET_FIELDS)


def _fields(record: bytes) -> dict[str, np.ndarray]:
    flat = np.frombuffer(record, "<f4")
    out, col = {}, 0
    for name, shape in TARGET_FIELDS:
        size = int(np.prod(shape))
        out[name] = flat[col:col + size]
        col += size
    assert col == len(flat) == TARGET_RECORD_BYTES // 4 + len(EXTRA_TARGETS)
    return out


def test_route_is_nan_only_when_it_cannot_be_resampled(synth_root_template):
    route = next(r for r in discover_routes(synth_root_template) if r.trainable)
    n = route.num_frames
    short = read_meta(synth_root_template / route.rel_path, n - 4)  # 4 frames before the end: 21 future ticks
    full = read_meta(synth_root_template / route.rel_path, 2)
    assert len(short["future_positions"]) < NEEDED_FUTURE <= len(full["future_positions"])

    for view in (False, True):
        ok = _fields(targets_record(short, view, num_boxes=3))
        assert ok["has_targets"][0] == 0 and ok["num_boxes"][0] == 3
        assert {k for k, v in ok.items() if np.isnan(v).any()} == NAN_WITHOUT_TARGETS

        degenerate = {**short, "route": np.zeros((5, 2), np.float32)}  # one distinct point: no resampling
        bad = _fields(targets_record(degenerate, view, num_boxes=0))
        assert bad["has_targets"][0] == 0
        assert {k for k, v in bad.items() if np.isnan(v).any()} == NAN_WITHOUT_TARGETS | {"route"}
        assert np.isnan(bad["route"]).all()

        good = _fields(targets_record(full, view, num_boxes=0))
        assert good["has_targets"][0] == 1 and not any(np.isnan(v).any() for v in good.values())
        with pytest.raises(ValueError, match="distinct point"):  # with a future, a bad route is an error, not NaN
            targets_record({**full, "route": np.zeros((5, 2), np.float32)}, view, num_boxes=0)
