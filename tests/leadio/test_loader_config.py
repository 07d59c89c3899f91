"""leadio.loader_config: the loader's options as one frozen value, checked before any I/O."""

from __future__ import annotations

import dataclasses

import pytest

from leadio.dataset import open_dataset
from leadio.loader_config import LoaderConfig
from leadio.plan import Shuffle

FIELDS = ["keys", "batch_size", "backend", "world_size", "rank", "seed", "num_workers", "perturbation_rate", "uneven",
          "shuffle", "block_shards", "on_error", "pin_memory", "persistent_workers", "device", "output"]


def test_the_set_of_options_is_pinned_and_frozen():
    config = LoaderConfig(keys=["rgb", "depth"])
    assert [f.name for f in dataclasses.fields(LoaderConfig)] == FIELDS
    assert config.keys == ("rgb", "depth") and not config.resolved
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.batch_size = 4  # type: ignore[misc]
    with pytest.raises(TypeError):
        LoaderConfig(["rgb"])  # type: ignore[misc]  # keyword-only
    ready = dataclasses.replace(config, backend="cpu", world_size=2, rank=1, shuffle=Shuffle("uniform"))
    assert ready.resolved and ready.keys == ("rgb", "depth")


@pytest.mark.parametrize(("option", "message"), [
    ({"keys": ["rgb", "nope"]}, "unknown keys ['nope']; valid keys: "),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"backend": "tpu"}, "backend must be 'auto', 'cpu' or 'dali', got 'tpu'"),
    ({"world_size": 2, "rank": 2}, "rank must be in [0, 2), got 2"),
    ({"num_workers": -1}, "num_workers must be >= 0, got -1"),
    ({"perturbation_rate": 1.5}, "perturbation_rate must be in [0, 1], got 1.5"),
    ({"uneven": "wrap"}, "uneven must be 'drop' or 'pad', got 'wrap'"),
    ({"shuffle": "random"}, "shuffle must be 'auto' or one of ['block', 'uniform'], got 'random'"),
    ({"shuffle": "block", "block_shards": 0}, "shuffle 'block' needs block_shards >= 1, got 0"),
    ({"on_error": "ignore"}, "on_error must be 'raise' or 'skip', got 'ignore'"),
    ({"output": "dict"}, "output must be 'compact' or 'lead', got 'dict'"),
])
def test_a_bad_option_fails_before_any_io(tmp_path, option, message):
    with pytest.raises(ValueError) as config_error:
        LoaderConfig(**option)
    assert str(config_error.value).startswith(message)
    missing = tmp_path / "no-such-set"  # open_dataset checks the options before it looks for the set
    with pytest.raises(ValueError) as open_error:
        open_dataset(missing, **option)
    assert str(open_error.value) == str(config_error.value)


@pytest.mark.parametrize(("options", "pinned"), [
    ({}, False), ({"device": "cpu"}, False), ({"device": "cuda"}, True), ({"device": "cuda:1"}, True),
    ({"device": "cuda", "pin_memory": False}, False), ({"pin_memory": True}, True),
])
def test_batch_buffers_are_pinned_by_default_where_batches_are_copied_to_a_gpu(options, pinned):
    # output="lead" with device="cuda" copies each host batch to the GPU: a pinned ring makes the copy non_blocking
    assert LoaderConfig(**options).pins_memory is pinned
