"""TFv6's ImageNet weights (`leadtrain.models.tfv6.weights`), with no network: a Hugging Face-style hub served on
127.0.0.1 (``/<repo>/resolve/main/<file>`` with the commit and ETag headers huggingface_hub reads) stands in for
huggingface.co. The download goes through the real ``huggingface_hub.hf_hub_download`` (the call timm makes), given
that endpoint; TFv6 itself is pointed at it with huggingface_hub's own variables (``HF_ENDPOINT``,
``HF_HUB_CACHE``). Offline is ``HF_HUB_OFFLINE=1`` or a cache-only call (no retries to wait for)."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from http_server import RangeHandler, serve_directory
from safetensors.torch import save_file

from leadtrain.models.tfv6.encoders import create_encoder
from leadtrain.models.tfv6.weights import WeightsUnavailable, hub_download, resolve_image_weights

REPO = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


class HubHandler(RangeHandler):
    """The hub's file endpoint: HEAD and GET of ``/<org>/<name>/resolve/main/<file>`` under the served folder,
    with ``X-Repo-Commit`` and ``ETag``; a missing file is 404 with ``X-Error-Code: EntryNotFound``. Every request
    is appended to ``server.requests`` as ``"HEAD <path>"`` or ``"GET <path>"``."""

    def _answer(self, body: bool) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        self.send_response(200)
        for k, v in {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                     "Content-Length": str(len(data))}.items():
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)


def _resnet18_weights() -> dict[str, torch.Tensor]:
    """timm-style ImageNet weights of resnet18 (the built-in encoder's names plus the classifier), seeded."""
    torch.manual_seed(7)
    state = {k: v for k, v in create_encoder("resnet18", 3, "builtin").state_dict().items()
             if not k.endswith("num_batches_tracked")}
    return {**state, "fc.weight": torch.randn(1000, 512), "fc.bias": torch.zeros(1000)}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """(endpoint URL, server, the served weights): timm/resnet18.a1_in1k holds model.safetensors."""
    folder = tmp_path / "hub" / "timm" / "resnet18.a1_in1k" / "resolve" / "main"
    folder.mkdir(parents=True)
    weights = _resnet18_weights()
    save_file(weights, str(folder / "model.safetensors"))
    with serve_directory(tmp_path / "hub", monkeypatch, handler=HubHandler) as (url, server):
        yield url, server, weights


def _cache_only(repo: str, **kw) -> Path:
    """`hub_download` without the network: what ``HF_HUB_OFFLINE=1`` makes of it."""
    return hub_download(repo, **{**kw, "local_files_only": True})


def _loads_the_served_weights(path: Path, weights: dict) -> None:
    encoder = create_encoder("resnet18", 3, "builtin", path)
    own = encoder.state_dict()
    assert all(torch.equal(own[k], v) for k, v in weights.items() if not k.startswith("fc."))


def test_imagenet_weights_download_once_into_the_hub_cache_then_load_from_it(hub, tmp_path):
    url, server, weights = hub
    cache = tmp_path / "cache"
    download = functools.partial(hub_download, endpoint=url)
    path = resolve_image_weights("resnet18", "imagenet", download=download, cache_dir=str(cache))
    assert path.name == "model.safetensors" and path.is_relative_to(cache)
    assert server.requests == ["HEAD /timm/resnet18.a1_in1k/resolve/main/model.safetensors",
                               "GET /timm/resnet18.a1_in1k/resolve/main/model.safetensors"]
    _loads_the_served_weights(path, weights)
    # the former name of the option means the same; from the cache without the network (cache-only call)
    again = resolve_image_weights("resnet18", "timm-cache", download=_cache_only, cache_dir=str(cache))
    assert again == path and len(server.requests) == 2


def test_a_repository_without_safetensors_gives_its_pytorch_file_as_timm_does(hub, tmp_path):
    url, server, weights = hub
    folder = tmp_path / "hub" / "timm" / "resnet18.a1_in1k" / "resolve" / "main"
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    path = resolve_image_weights("resnet18", "imagenet", download=functools.partial(hub_download, endpoint=url),
                                 cache_dir=str(tmp_path / "cache"))
    assert path.name == "pytorch_model.bin"
    assert [r.split()[1].rsplit("/", 1)[1] for r in server.requests] == [
        "model.safetensors", "pytorch_model.bin", "pytorch_model.bin"]  # 404, then HEAD and GET
    _loads_the_served_weights(path, weights)


def test_offline_and_not_cached_is_one_line_naming_the_cache_and_none(tmp_path):
    cache = tmp_path / "empty_cache"
    with pytest.raises(WeightsUnavailable) as err:
        resolve_image_weights("resnet34", "imagenet", download=_cache_only, cache_dir=str(cache))
    msg = str(err.value)
    assert "\n" not in msg and str(cache) in msg and "image_pretrained_weights=none" in msg
    assert msg.startswith("image_pretrained_weights=imagenet: the ImageNet weights of resnet34 "
                          "(timm/resnet34.a1_in1k) are not in the Hugging Face cache")
    with pytest.raises(WeightsUnavailable, match=r"^image_pretrained_weights=/nowhere/w.pth: no such file; .*none"):
        resolve_image_weights("resnet34", "/nowhere/w.pth")
    with pytest.raises(WeightsUnavailable, match=r"no known ImageNet weights for 'regnety_032' without timm"):
        resolve_image_weights("regnety_032", "imagenet")
    assert resolve_image_weights("resnet34", "none") is None


_RANK = """
import functools, os, sys
import torch.distributed as dist
from leadtrain.models.tfv6.weights import WeightsUnavailable, hub_download, resolve_image_weights
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + os.environ["PORT"],
                        rank=int(os.environ["RANK"]), world_size=2)
try:
    path = resolve_image_weights("resnet18", "imagenet", cache_dir=os.environ["CACHE"],
                                 download=functools.partial(hub_download, endpoint=os.environ["URL"]))
except WeightsUnavailable as e:
    print(e)
    sys.exit(2)
print("PATH", path)
"""


def _two_ranks(url: str, cache: Path, **env: str) -> list[tuple[int, str]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-c", _RANK], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO), "PORT": str(port), "URL": url,
                                              "CACHE": str(cache), "RANK": str(r), "LOCAL_RANK": str(r), **env})
             for r in range(2)]
    return [(p.wait(timeout=120), p.stdout.read().strip().splitlines()[-1]) for p in procs]


def test_under_ddp_the_main_process_downloads_and_the_other_reads_the_cache(hub, tmp_path):
    url, server, weights = hub
    (rc0, out0), (rc1, out1) = _two_ranks(url, tmp_path / "cache")
    assert rc0 == rc1 == 0 and out0 == out1 and out0.startswith("PATH ")
    assert server.requests == ["HEAD /timm/resnet18.a1_in1k/resolve/main/model.safetensors",
                               "GET /timm/resnet18.a1_in1k/resolve/main/model.safetensors"]  # rank 1: no request
    _loads_the_served_weights(Path(out0.split(" ", 1)[1]), weights)


def test_under_ddp_offline_every_rank_ends_with_the_one_line_and_none_waits(hub, tmp_path):
    url, server, _ = hub
    results = _two_ranks(url, tmp_path / "cache", HF_HUB_OFFLINE="1")
    assert [rc for rc, _ in results] == [2, 2] and server.requests == []
    assert all("are not in the Hugging Face cache" in line and "image_pretrained_weights=none" in line
               for _, line in results)


def test_tfv6_fetches_its_imagenet_weights_through_the_hub_and_logs_its_encoders(hub, tmp_path):
    url, server, weights = hub
    code = ("import logging, torch; logging.basicConfig(level=logging.INFO);"
            "from leadtrain.models.tfv6 import TFv6, TFv6Config;"
            "m = TFv6(TFv6Config(image_architecture='resnet18', final_image_height=64, final_image_width=192), "
            "image_pretrained_weights='imagenet');"
            "torch.save(m.backbone.image_encoder.state_dict(), 'enc.pth'); print(m.encoder_implementation)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_ENDPOINT": url, "HF_HUB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    impl = proc.stdout.strip()  # timm where it imports (then timm's own loader reads the file), else built-in
    assert impl.startswith("timm ") or impl == "built-in (timm is not installed)"
    assert f"TFv6 encoders (image resnet18, LiDAR resnet34): {impl}" in proc.stderr
    assert "image encoder resnet18: ImageNet weights timm/resnet18.a1_in1k from" in proc.stderr
    own = torch.load(tmp_path / "enc.pth", weights_only=True)
    assert all(torch.equal(own[k], v) for k, v in weights.items() if not k.startswith("fc."))
    assert [r for r in server.requests if "/resolve/" in r] == [  # (huggingface_hub also asks /api/ for itself)
        "HEAD /timm/resnet18.a1_in1k/resolve/main/model.safetensors",
        "GET /timm/resnet18.a1_in1k/resolve/main/model.safetensors"]
