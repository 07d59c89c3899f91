"""Loader states across a rebuilt shard set (issue 22, item 4): a state counts positions in the epoch's global
sequence, so it is only valid for the samples it was saved over. A set rebuilt under the same name with other
samples (a route added), or a collection that changed, is refused with one line saying what changed; a set
rebuilt with the same samples (a pixel edit rewrites a shard) resumes exactly."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import simplejpeg

from leadio.buckets.collection import Bucket, BucketCollection
from leadio.dataset import STATE_VERSION, ResumeMismatch, open_dataset
from leadio.shard.build import build_shard_set

KW = {"batch_size": 4, "backend": "cpu", "num_workers": 0, "keys": ["targets"], "world_size": 1, "rank": 0, "seed": 7}


@pytest.fixture(scope="module")
def template(synth_root_template, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "data" / "carla_leaderboard2"
    shutil.copytree(synth_root_template, root)
    _build(root)
    return root


@pytest.fixture
def root(template, tmp_path) -> Path:
    copy = tmp_path / "data" / "carla_leaderboard2"
    shutil.copytree(template, copy)
    return copy


def _build(root: Path) -> Path:
    return build_shard_set(root, "full_pretrain", workers=1, samples_per_shard=8, progress=False).set_dir


def _set_dir(root: Path) -> Path:
    return next((root / "shards").glob("full_pretrain-*/manifest.json")).parent


def _rows(loader) -> list[int]:
    return [r for batch in loader for r in batch["row"].tolist()]


def _keys(loader, rows: list[int]) -> list[str]:
    return [str(loader.shard_set.catalog["sample_key"][r]) for r in rows]


def _saved_after_two_batches(root: Path) -> tuple[dict, list[str]]:
    """(state after 2 batches, the keys of the whole epoch in order); the state goes through JSON as a file."""
    loader = open_dataset(_set_dir(root), **KW)
    epoch = _keys(loader, loader.plan(0).rows[: len(loader.plan(0)) // 4 * 4].tolist())
    it = iter(loader)
    next(it), next(it)
    it.close()
    return json.loads(json.dumps(loader.state_dict())), epoch


def _trainable_routes(set_dir: Path) -> list[str]:
    return sorted(json.loads((set_dir / "manifest.json").read_text())["collection"]["routes"])


def test_a_state_of_a_set_rebuilt_with_a_route_added_is_refused_saying_what_changed(root):
    state, _ = _saved_after_two_batches(root)
    old = open_dataset(_set_dir(root), **KW)
    route = root / _trainable_routes(_set_dir(root))[0]
    shutil.copytree(route, route.with_name(route.name[:-2] + ("99" if route.name[-2:] != "99" else "98")))
    assert _build(root) == _set_dir(root)  # the same name: the pipeline is unchanged
    new = open_dataset(_set_dir(root), **KW)
    assert len(new.shard_set) > len(old.shard_set) and new.shard_set.identity != old.shard_set.identity
    with pytest.raises(ResumeMismatch) as e:
        new.load_state_dict(state)
    name = _set_dir(root).name
    assert str(e.value) == (
        f"loader state of epoch 0 (8 samples consumed): the shard set {name} was rebuilt since this state was saved "
        f"(manifest {old.shard_set.identity} -> {new.shard_set.identity}; samples {len(new.shard_set)}, were "
        f"{len(old.shard_set)}; frames of 'full_pretrain' {len(new.shard_set)}, were {len(old.shard_set)}), so the "
        f"saved position cannot be mapped onto its samples; continue without the state: set_epoch(0) replays epoch 0 "
        f"from its start, set_epoch(1) skips its rest")
    assert isinstance(e.value, ValueError) and (e.value.key, e.value.epoch, e.value.consumed) == ("content", 0, 8)
    assert (e.value.saved, e.value.current) == (state["identity"], new.identity)
    assert new.state_dict()["consumed"] == 0  # refused: the position is untouched
    new.set_epoch(0)  # what the message offers: the epoch afresh, every sample of the new set exactly once
    rows = _rows(new)
    assert rows == new.plan(0).rows[: len(new.plan(0)) // 4 * 4].tolist() and len(set(rows)) == len(rows)


def test_a_set_rebuilt_with_the_same_samples_resumes_exactly(root, caplog):
    """Edited pixels rewrite a shard and the manifest, but not which sample sits where: the position maps."""
    state, epoch = _saved_after_two_batches(root)
    before = open_dataset(_set_dir(root), **KW).shard_set.identity
    jpeg = root / _trainable_routes(_set_dir(root))[0] / "rgb" / "0005.jpg"
    jpeg.write_bytes(simplejpeg.encode_jpeg(simplejpeg.decode_jpeg(jpeg.read_bytes())[:, ::-1].copy(), quality=90))
    assert _build(root) == _set_dir(root)
    resumed = open_dataset(_set_dir(root), **KW)
    assert resumed.shard_set.identity != before and resumed.identity == state["identity"]
    with caplog.at_level(logging.INFO, logger="leadio.dataset"):
        resumed.load_state_dict(state)
    assert f"shard set {_set_dir(root).name} was rebuilt since the loader state was saved, but the samples, shards " \
           f"and rates of the epoch plan are unchanged: resuming exactly" in caplog.text
    assert _keys(resumed, _rows(resumed)) == epoch[8:]


def test_a_state_of_a_collection_changed_under_its_name_is_refused(root):
    state, _ = _saved_after_two_batches(root)
    own = open_dataset(_set_dir(root), **KW).collection
    halved = BucketCollection(name=own.name, buckets=[Bucket(b.name, b.members, {0: 0.5}) for b in own.buckets],
                              builder=own.builder, params=own.params, routes=own.routes, totals=own.totals)
    loader = open_dataset(_set_dir(root), collection=halved, **KW)
    with pytest.raises(ResumeMismatch, match=rf"^loader state of epoch 0 \(8 samples consumed\): the collection "
                                             rf"'full_pretrain' changed since this state was saved \(its frames in "
                                             rf"shard set {_set_dir(root).name}: {len(own)}, were {len(own)}; or its "
                                             rf"buckets or rates\), so the saved position cannot be mapped"):
        loader.load_state_dict(state)


def test_a_state_of_the_previous_version_is_refused_naming_both(root):
    state, _ = _saved_after_two_batches(root)
    assert STATE_VERSION == 3 and state["version"] == 3
    old = {k: v for k, v in state.items() if k not in ("shard_set_identity", "samples", "collection_frames",
                                                       "identity")}
    with pytest.raises(ResumeMismatch, match=r"^loader state has version=2, this loader has 3; resume with the same "
                                             r"version$") as e:
        open_dataset(_set_dir(root), **KW).load_state_dict({**old, "version": 2})
    assert (e.value.key, e.value.saved, e.value.current) == ("version", 2, 3)


def test_the_state_records_what_its_position_counts(root):
    loader = open_dataset(_set_dir(root), **KW)
    state = loader.state_dict()
    manifest = json.loads((_set_dir(root) / "manifest.json").read_text())
    assert state["shard_set_identity"] == loader.shard_set.identity != ""
    assert state["samples"] == manifest["num_samples"] == len(loader.shard_set)
    assert state["collection_frames"] == int(sum(len(r) for r in loader.bucket_rows))
    assert len(state["identity"]) == 32 and int(state["identity"], 16) >= 0
    # the identity depends on the seed-free inputs only: another seed or world size has the same one
    other = open_dataset(_set_dir(root), **{**KW, "seed": 8, "batch_size": 2, "world_size": 2, "rank": 1})
    assert other.identity == loader.identity
    assert np.array_equal(np.concatenate(other.bucket_rows), np.concatenate(loader.bucket_rows))
