"""Issue 14, "fits like a tool": LEAD's commands as written, one-line errors, honest help, lean packaging,
dataset roots that open, fresh runs that do not pick stale checkpoints, W&B offline, S3 over loopback, and
synthetic pickles that numpy 1 can read."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import json
import lzma
import os
import pickle
import pickletools
import shutil
import socket
import struct
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from leadio.cli import main as leadio_main
from leadio.format.config import UnknownDatasetError
from leadio.format.pickles import ALLOWED_GLOBALS, load_lzma_pickle
from leadio.shard.shardset import ShardSetError, open_shard_set

REPO = Path(__file__).resolve().parents[2]
TINY = ["epochs=1", "model_size=tiny", "batch_size=4", "num_workers=0", "max_steps_per_epoch=2",
        "log_scalars_frequency=1", "log_images_frequency=1000", "backend=cpu"]


@pytest.fixture(scope="module")
def built_root(tmp_path_factory, make_built_root) -> Path:
    """A root named as LEAD names it, with its full_pretrain shard set."""
    root = tmp_path_factory.mktemp("cli") / "data" / "carla_leaderboard2"
    make_built_root(root, 16)
    return root


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


# ------------------------------------------------------------------ 1: LEAD's commands, as its guide writes them
def test_reference_commands_run_without_arguments_from_the_data_folder(synth_root_template, tmp_path):
    cwd = tmp_path / "work"  # like LEAD's checkout: data/carla_leaderboard2 under the working directory
    shutil.copytree(synth_root_template, cwd / "data" / "carla_leaderboard2")
    root = cwd / "data" / "carla_leaderboard2"
    for script, made in (("build_buckets_pretrain.py", "buckets/full_pretrain_buckets.gz"),
                         ("build_buckets_posttrain.py", "buckets/full_posttrain_buckets_8_8_8_5.gz"),
                         ("build_cache.py", "shards/full_pretrain-*/manifest.json")):
        proc = _run([sys.executable, str(REPO / "scripts" / script)], cwd)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert list(root.glob(made)), (script, made)

    # pretrain.sh reads LEAD_ROOT's default and writes outputs/ relative to the working directory
    pre = cwd / "outputs" / "local_training" / "pretrain"
    proc = _run(["bash", str(REPO / "scripts" / "pretrain.sh"), *TINY, "epochs=2", f"viz_dir={tmp_path / 'viz'}"],
                cwd, {"PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (pre / "model_0001.pth").exists()
    assert "requires_grad=True to a scalar" not in proc.stderr  # item 9: no warning on every run

    # item 7: a fresh epochs=1 run into the same logdir must not leave the old model_0001 for posttrain to load;
    # item 13: the same run logs to W&B offline (when the wandb extra is installed; make installs it)
    old = torch.load(pre / "model_0001.pth", weights_only=True)
    with_wandb = importlib.util.find_spec("wandb") is not None
    proc = _run(["bash", str(REPO / "scripts" / "pretrain.sh"), *TINY, f"viz_dir={tmp_path / 'viz'}",
                 *(["log_wandb=true"] if with_wandb else [])],
                cwd, {"PYTHON": sys.executable, "WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    from leadtrain.checkpoint import latest_epoch_checkpoint

    assert latest_epoch_checkpoint(pre) == (0, pre / "model_0000.pth")  # posttrain's default load_file
    assert not (pre / "model_0001.pth").exists()
    aside = torch.load(pre / "previous_run" / "model_0001.pth", weights_only=True)
    assert all(torch.equal(old[k], aside[k]) for k in old)  # set aside, not lost
    assert len(list(pre.glob("events.out.tfevents.*"))) == 1  # event files no longer pile up
    if with_wandb:
        _check_wandb_offline_run(pre)


def _check_wandb_offline_run(logdir: Path) -> None:
    """The offline run holds every scalar TensorBoard got, with numbers, and one image whose file exists."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = list((logdir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, runs
    history = _wandb_history(runs[0])
    logged = {k: v for h in history for k, v in h.items()}
    events = EventAccumulator(str(logdir))
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert scalars and all(isinstance(logged.get(t), float | int) for t in scalars), (scalars, sorted(logged))
    images = [k.removesuffix("/_type") for k, v in logged.items() if k.endswith("/_type") and v == "image-file"]
    assert len(images) >= 1
    assert (runs[0].parent / "files" / logged[f"{images[0]}/path"]).stat().st_size > 0


def _wandb_history(path: Path) -> list[dict]:
    """History records of a W&B run file (LevelDB log format: 32 KiB blocks of records with 7-byte headers)."""
    from wandb.proto import wandb_internal_pb2

    raw, pos, records, part = path.read_bytes(), 7, [], b""  # 7: the ':W&B' file header
    while pos + 7 <= len(raw):
        if 32768 - pos % 32768 < 7:  # block trailer padding
            pos += 32768 - pos % 32768
            continue
        _, n, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        part, pos = part + raw[pos + 7:pos + 7 + n], pos + 7 + n
        if kind == 0 and n == 0:
            break
        if kind in (1, 4):  # FULL or LAST
            records.append(part)
            part = b""
    out = []
    for data in records:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(data)
        if rec.WhichOneof("record_type") == "history":
            out.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item})
    return out


def test_pretrain_sh_without_data_says_where_it_looked(tmp_path):
    proc = _run(["bash", str(REPO / "scripts" / "pretrain.sh")], tmp_path, {"PYTHON": sys.executable})
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert "no LEAD routes in data/carla_leaderboard2/data" in line and "LEAD_ROOT=" in line


# ------------------------------------------------------------------ 2: --dataset-config reaches every stage
def test_root_without_the_magic_name_shards_with_dataset_config(synth_root_template, tmp_path, capsys):
    from leadio.buckets.__main__ import main as buckets_main
    from leadio.shard.__main__ import main as shard_main

    root = tmp_path / "my_routes"
    shutil.copytree(synth_root_template, root)
    assert shard_main(["--root", str(root), "--quiet", "--workers", "1", "--samples-per-shard", "16"]) == 2
    assert "cannot tell the sensor setup" in _one_error_line(capsys.readouterr().err)
    assert buckets_main(["--root", str(root), "--dataset-config", "carla_leaderboard2", "--workers", "1"]) == 0
    capsys.readouterr()
    # the catalog remembers the sensor setup: the shard step (and the trainer, below) need no flag
    assert shard_main(["--root", str(root), "--quiet", "--workers", "1", "--samples-per-shard", "16"]) == 0
    manifest = json.loads(next((root / "shards").glob("full_pretrain-*/manifest.json")).read_text())
    assert manifest["dataset_config"] == "carla_leaderboard2" and manifest["num_samples"] > 0

    # item 4 on this root too: the catalog remembers its config, so a new collection builds without the flag
    from leadio.dataset import open_dataset

    loader = open_dataset(root, collection="full_posttrain", batch_size=2, backend="cpu", keys=["targets"],
                          world_size=1, rank=0)
    assert len(loader.collection) > 0 and next(iter(loader))["waypoints"].shape == (2, 8, 2)
    train = subprocess.run(["bash", str(REPO / "scripts" / "pretrain.sh"), "model_size=tiny", "epochs=1",
                            "max_steps_per_epoch=1", "batch_size=2", "visualize_training=false"],
                           cwd=tmp_path, env={**os.environ, "LEAD_ROOT": str(root)}, capture_output=True, text=True,
                           timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    assert (tmp_path / "outputs" / "local_training" / "pretrain" / "model_0000.pth").exists()


# ------------------------------------------------------------------ 3, 6: one-line errors, --verbose, help
def test_user_errors_are_one_line_and_verbose_shows_the_traceback(built_root, tmp_path, capsys, monkeypatch):
    from leadio.buckets.__main__ import main as buckets_main
    from leadio.catalog import main as catalog_main
    from leadio.shard.__main__ import main as shard_main

    root = str(built_root)
    cases = [
        (catalog_main, ["--root", root, "--dataset-config", "carla_lb2"],
         ["unknown dataset config 'carla_lb2'", "known configs: carla_leaderboard2"]),
        (shard_main, ["--root", root, "--part", "2/2"], ["--part must be i/N with 0 <= i < N, counting from 0"]),
        (buckets_main, ["--root", root, "--collection", "full_pretrian"],
         ["unknown collection 'full_pretrian'", "full_posttrain", "full_pretrain"]),
        (shard_main, ["--root", root, "--collection", "full_pretrian"], ["unknown collection 'full_pretrian'"]),
        (shard_main, ["verify", str(tmp_path / "nowhere")], ["nowhere does not exist", "python -m leadio.shard"]),
        (shard_main, ["--root", root, "--collection", "full_posttrain", "--merge"],
         ["cannot merge", "full_posttrain-", "no part of it was written", "--part i/N"]),
    ]
    for fn, argv, expected in cases:
        assert fn(argv) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert all(e in line for e in expected), (argv, line)
        assert "--verbose" in line
    monkeypatch.chdir(tmp_path)  # no data/carla_leaderboard2 here: the default root names itself and --root
    assert catalog_main([]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "data/carla_leaderboard2/data does not exist" in line and "pass --root" in line
    with pytest.raises(UnknownDatasetError):
        catalog_main(["--root", root, "--dataset-config", "carla_lb2", "--verbose"])


def _help(fn, argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        fn(argv)
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


def test_every_help_shows_its_defaults(capsys):
    from leadio.buckets.__main__ import main as buckets_main
    from leadio.catalog import main as catalog_main
    from leadio.shard.__main__ import main as shard_main
    from leadio.synth import main as synth_main

    text = _help(synth_main, ["--help"], capsys)
    assert "number of routes (default: 10)" in text and "(default: 40)" in text and "processes (default: 1)" in text
    text = _help(catalog_main, ["--help"], capsys)
    assert f"(default: one per CPU, here {os.cpu_count()})" in text and "(default: data/carla_leaderboard2)" in text
    text = _help(shard_main, ["--help"], capsys)
    assert "(default: 256MiB)" in text and "counting from 0" in text and "(default: full_pretrain)" in text
    text = _help(buckets_main, ["--help"], capsys)
    assert "``" not in text and "(default: full_pretrain)" in text
    assert "--deep" in _help(shard_main, ["verify", "--help"], capsys)
    for script, collection in (("build_buckets_pretrain.py", "full_pretrain"),
                               ("build_buckets_posttrain.py", "full_posttrain")):
        proc = _run([sys.executable, str(REPO / "scripts" / script), "--help"], REPO)
        assert proc.stdout.startswith(f"usage: python scripts/{script}"), proc.stdout[:200]
        assert f"(default: {collection})" in " ".join(proc.stdout.split())
    proc = _run([sys.executable, str(REPO / "leadtrain" / "posttrain.py"), "--help"], REPO)
    assert proc.returncode == 0 and proc.stdout.startswith("Planning post-training")
    assert "collection=full_posttrain" in proc.stdout and "use_planning_decoder=True" in proc.stdout


def test_leadio_console_entry_dispatches_to_each_step(built_root, capsys):
    console = Path(sys.executable).parent / "leadio"
    assert console.exists(), "pip install -e . registers the leadio console script"
    proc = _run([str(console), "--help"], REPO)
    assert proc.returncode == 0
    assert [line.split()[0] for line in proc.stdout.splitlines()[3:]] == ["synth", "catalog", "buckets", "shard",
                                                                           "verify", "inspect", "report"]
    for name in ("synth", "catalog", "buckets", "shard", "verify"):
        text = _help(leadio_main, [name, "--help"], capsys)
        assert text.startswith(f"usage: leadio {name}"), text[:80]
    set_dir = next((built_root / "shards").glob("full_pretrain-*"))
    assert leadio_main(["verify", str(set_dir)]) == 0
    assert "OK" in capsys.readouterr().out
    for name in ("inspect", "report"):  # written separately; tested here only once they exist
        if importlib.util.find_spec(f"leadio.{name}") is not None:
            text = _help(leadio_main, [name, "--help"], capsys)
            assert text.startswith("usage:")
    assert leadio_main(["shrad"]) == 2
    assert "unknown command 'shrad'" in _one_error_line(capsys.readouterr().err)
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"leadio", "leadio-synth", "leadio-catalog", "leadio-buckets", "leadio-shard"} <= set(scripts)


# ------------------------------------------------------------------ 4: a dataset root opens
def test_open_dataset_resolves_a_dataset_root(built_root, tmp_path):
    from leadio.dataset import open_dataset

    set_dir = next((built_root / "shards").glob("full_pretrain-*"))
    kw = {"batch_size": 4, "backend": "cpu", "keys": ["targets"], "world_size": 1, "rank": 0}
    by_root = open_dataset(built_root, collection="full_posttrain", **kw)  # planned over the pretrain set
    by_set = open_dataset(set_dir, collection="full_posttrain", **kw)
    assert by_root.shard_set.path == set_dir
    a, b = next(iter(by_root)), next(iter(by_set))
    assert torch.equal(a["row"], b["row"]) and torch.equal(a["waypoints"], b["waypoints"])
    assert open_dataset(built_root, **kw).shard_set.path == set_dir  # default collection: full_pretrain
    empty = tmp_path / "carla_leaderboard2"
    (empty / "data").mkdir(parents=True)
    with pytest.raises(ShardSetError, match=r"has no shard set for collection 'full_posttrain'.*"
                                            r"python -m leadio.shard --root .* --collection full_posttrain"):
        open_dataset(empty, collection="full_posttrain", **kw)
    with pytest.raises(ShardSetError, match="is a dataset root, not a shard set: open_dataset"):
        open_shard_set(built_root)
    with pytest.raises(ShardSetError, match="does not exist"):
        open_shard_set(tmp_path / "nope")


# ------------------------------------------------------------------ 8: the demo leaves the machine alone
def test_benchmark_never_drops_the_page_cache_unless_asked(monkeypatch, tmp_path):
    import benchmarks.loader_throughput as lt
    from benchmarks.loader_throughput import timing

    calls = []
    monkeypatch.setattr(lt, "run_benchmark", lambda root, **kw: calls.append(kw["warm"]))
    monkeypatch.setattr(timing, "drop_page_cache", lambda: pytest.fail("the page cache was dropped"))
    lt.main(["--root", str(tmp_path), "--quick"])  # what make demo runs
    lt.main(["--root", str(tmp_path), "--cold"])
    assert calls == [True, False]
    probe = tmp_path / "probe"
    probe.write_bytes(b"x" * 4096)
    assert timing.page_cache_mode([probe], want_cold=False)[0] == "warm"
    demo = (REPO / "scripts" / "demo.py").read_text()
    assert '"benchmarks.loader_throughput"' in demo and "--cold" not in demo


# ------------------------------------------------------------------ 11: packaging
def test_packaging_license_version_typed_and_lean_core():
    assert "Apache License" in (REPO / "LICENSE").read_text() and (REPO / "leadio" / "py.typed").exists()
    import leadio

    assert leadio.__version__ == importlib.metadata.version("leadio")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    assert not any(name in core for name in ("webdataset", "accelerate", "tensorboard", "wandb", "s3fs"))
    extras = project["optional-dependencies"]
    assert {"train", "s3", "wandb", "dali", "dali-cuda13"} <= set(extras)
    assert any(d.startswith("accelerate") for d in extras["train"]) and extras["s3"][0].startswith("s3fs")
    proc = _run([sys.executable, "-c", "import sys, leadio.dataset, leadio.shard, leadio.catalog; "
                                       "print(sorted({'accelerate', 'tensorboard', 'webdataset'} & set(sys.modules)))"],
                REPO)
    assert proc.stdout.strip() == "[]", proc.stderr[-2000:]  # the loader imports no trainer or benchmark package


# ------------------------------------------------------------------ 14: S3 over loopback
def test_shard_set_served_by_a_real_s3_api_on_loopback(built_root, tmp_path, monkeypatch):
    pytest.importorskip("s3fs", reason="the s3 extra is not installed (pip install 'leadio[s3]')")
    moto_server = pytest.importorskip("moto.server", reason="moto is not installed (the test extra)")
    from leadio.dataset import open_dataset
    from leadio.read import read_ranges

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                     "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}.items():
            monkeypatch.setenv(k, v)
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        fs.mkdir("leadio-test")
        set_dir = next((built_root / "shards").glob("full_pretrain-*"))
        fs.put(str(set_dir), f"leadio-test/sets/{set_dir.name}", recursive=True)
        url = f"s3://leadio-test/sets/{set_dir.name}"

        shard = json.loads((set_dir / "manifest.json").read_text())["shards"][0]["path"]
        local = (set_dir / shard).read_bytes()
        assert read_ranges(f"{url}/{shard}", [(1000, 700), (0, 512), (5000, 3)]) == \
            [local[1000:1700], local[:512], local[5000:5003]]

        kw = {"batch_size": 4, "backend": "cpu", "keys": ["rgb", "targets"], "world_size": 1, "rank": 0,
              "shuffle": "uniform"}  # the same order as the local set ("auto" gives a remote set a block shuffle)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # item 9: no ZarrUserWarning about the cache's lock files
            remote = open_dataset(url, cache_dir=tmp_path / "cache", cache_bytes=64 * 1024**2, **kw)
            got = [next(iter(remote))]
        want = next(iter(open_dataset(set_dir, **kw)))
        assert got[0].keys() == want.keys() and all(_same_tensor(got[0][k], want[k]) for k in want)
        assert list((tmp_path / "cache" / "data").rglob("*.tar"))  # served through the session cache
    finally:
        server.stop()


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Exactly equal, NaN == NaN (frames near a route end have NaN planning targets)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, rtol=0, atol=0, equal_nan=True))


# ------------------------------------------------------------------ 15: numpy 1 can read the synthetic pickles
class _Numpy1Unpickler(pickle.Unpickler):  # noqa: S301 - an allow-list unpickler
    """What numpy 1.26 can resolve: no ``numpy._core`` (numpy 2's name for ``numpy.core``); and, as everywhere in
    this project, only the plain-data globals of leadio's allow-list."""

    def find_class(self, module: str, name: str):
        if module == "numpy._core" or module.startswith("numpy._core."):
            raise ModuleNotFoundError(f"No module named {module!r} (numpy 1.26 has no numpy._core)")
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not plain data")
        return super().find_class(module, name)


def test_synthetic_pickles_load_without_numpy_core(synth_root_template):
    route = next(p for p in sorted((synth_root_template / "data").glob("*/*")) if (p / "metas").is_dir())
    checked = 0
    for folder in ("metas", "bboxes"):
        for path in sorted((route / folder).glob("*.pkl"))[:3]:
            data = lzma.decompress(path.read_bytes())
            globals_ = {arg for op, arg, _ in pickletools.genops(data) if op.name in ("GLOBAL", "STACK_GLOBAL")}
            assert "numpy.core.multiarray _reconstruct" in globals_ or folder == "bboxes"
            ours = _Numpy1Unpickler(io.BytesIO(data)).load()
            reference = load_lzma_pickle(path)
            _assert_same(ours, reference)
            checked += 1
    assert checked == 6


def _assert_same(a, b) -> None:
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True) and a.flags.writeable
    else:
        assert a == b or (a != a and b != b)


# ------------------------------------------------------------------ 9: the demo explains its epoch times
def test_demo_training_line_names_each_epoch_time_and_the_start_up_in_the_first():
    from scripts.demo import training_line

    summary = {"global_steps": 40, "seconds_per_epoch": [30.4, 7.2], "data_stall_pct": 12.345}
    assert training_line(summary, "outputs/local_training/pretrain") == (
        "40 steps, epochs took 30 s, 7 s (the first includes start-up: decode threads, first reads), "
        "data stall 12.3% -> outputs/local_training/pretrain")
