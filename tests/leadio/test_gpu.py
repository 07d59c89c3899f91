"""The loader's GPU paths, on a machine with a CUDA GPU (``pytest -m gpu tests/test_gpu.py``; skipped elsewhere,
with the reason): the dali backend's nvJPEG (``mixed``) decode against the cpu backend, and pinned batch buffers
copied to the GPU. `benchmarks.gpu_check` is the same comparison at scale, with timings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leadio.dataset import open_dataset
from leadio.decode.dali import dali_available

#: nvJPEG may round the IDCT / colour conversion differently from libjpeg-turbo (simplejpeg, the cpu backend):
#: rgb may differ by 1 per value, as `benchmarks.gpu_check` and `benchmarks.loader_throughput` allow. (On the
#: CPU, test_dataset's cpu-vs-dali test asks for exact equality: both decoders there are libjpeg-turbo.)
RGB_ATOL = 1
#: batch keys made per batch by ``torch.tensor`` (not views of the ring's buffers, so not pinned)
NOT_RING_KEYS = ("row", "view")


def _no_cuda() -> str | None:
    if torch.cuda.is_available():
        return None
    return (f"no CUDA GPU visible to torch (torch.cuda.is_available() is False; torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'none, a CPU-only torch'})")


def _no_dali() -> str | None:
    if _no_cuda():
        return _no_cuda()
    ok, why = dali_available()
    return None if ok else f"DALI is not importable: {why}"


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_no_cuda() is not None, reason=_no_cuda() or "")]
needs_dali = pytest.mark.skipif(_no_dali() is not None, reason=_no_dali() or "")


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, make_built_root) -> Path:
    root = tmp_path_factory.mktemp("gpu") / "data" / "carla_leaderboard2"
    return make_built_root(root, 5)


@needs_dali
def test_dali_mixed_decodes_rgb_on_the_gpu_as_the_cpu_backend_and_every_other_key_identically(shard_dir):
    kw = {"batch_size": 4, "num_workers": 2, "seed": 2, "perturbation_rate": 0.5}  # both views
    cpu = list(open_dataset(shard_dir, backend="cpu", **kw))
    gpu = list(open_dataset(shard_dir, backend="dali", device="cuda", **kw))
    assert len(cpu) == len(gpu) > 0
    views = set()
    for a, b in zip(cpu, gpu, strict=True):
        assert set(a) == set(b)
        assert b["rgb"].device.type == "cuda", "the mixed (nvJPEG) decoder did not leave rgb on the GPU"
        views |= set(a["view"].tolist())
        for key in a:
            got = b[key].cpu()
            assert a[key].dtype == got.dtype and a[key].shape == got.shape, key
            if key == "rgb":
                diff = (got.to(torch.int16) - a[key].to(torch.int16)).abs()
                over = int((diff > RGB_ATOL).sum())
                assert over == 0, f"rgb: {over} values differ by more than {RGB_ATOL} (max {int(diff.max())}), " \
                                  f"rows {a['row'].tolist()}"
            else:
                assert b[key].device.type == "cpu", key  # only the JPEGs are decoded on the GPU
                torch.testing.assert_close(got, a[key], rtol=0, atol=0, equal_nan=True,
                                           msg=lambda m, key=key: f"{key}: {m}")
    assert views == {0, 1}


def test_pinned_batches_copy_to_the_gpu_unchanged(shard_dir):
    kw = {"backend": "cpu", "batch_size": 4, "num_workers": 2, "seed": 2}
    unpinned = next(iter(open_dataset(shard_dir, pin_memory=False, **kw)))
    assert not unpinned["semantic"].is_pinned()
    batches = 0
    for batch in open_dataset(shard_dir, pin_memory=True, **kw):
        assert batch["semantic"].is_pinned()
        for key, host in batch.items():
            if key in NOT_RING_KEYS:
                continue
            assert host.is_pinned(), key
            dev = host.to("cuda", non_blocking=True)
            torch.cuda.synchronize()  # the copy is done before the host tensor is compared (or dropped)
            assert dev.device.type == "cuda"
            torch.testing.assert_close(dev.cpu(), host, rtol=0, atol=0, equal_nan=True,
                                       msg=lambda m, key=key: f"{key}: {m}")
        batches += 1
    assert batches > 0


def test_lead_batches_built_on_the_gpu_equal_the_ones_built_on_the_cpu(shard_dir):
    # device="cuda": the compact batch (pinned ring) is copied and LEAD's keys are built there. Floats within a
    # few ulp (the depth upsample is OpenCV's on the CPU, F.interpolate on the GPU: the same sampling, within 2
    # float32 ulp; CUDA's exp/atan2 may round differently), integers and booleans exact
    kw = {"backend": "cpu", "batch_size": 4, "num_workers": 2, "seed": 2, "perturbation_rate": 0.5,
          "output": "lead", "pin_memory": True}
    cpu = [{k: v.clone() for k, v in b.items()} for b in open_dataset(shard_dir, **kw)]
    gpu = [{k: v.cpu() for k, v in b.items()} for b in open_dataset(shard_dir, device="cuda", **kw)]
    assert len(cpu) == len(gpu) > 0
    timing = {"loading_time", "loading_meta_time", "loading_sensor_time"}
    for a, b in zip(cpu, gpu, strict=True):
        assert set(a) == set(b)
        for key in set(a) - timing:
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            exact = not a[key].is_floating_point()
            torch.testing.assert_close(b[key], a[key], rtol=0 if exact else 1e-6, atol=0 if exact else 1e-5,
                                       equal_nan=True, msg=lambda m, key=key: f"{key}: {m}")
