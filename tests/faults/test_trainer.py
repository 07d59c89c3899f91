"""The trainer as a user runs it (issue 23 items 1, 3, 5, 8; issue 22 items 5, 7, 11): a failed start leaves
the logdir and the pictures byte-identical; every mistake is one line and exit code 2; a fresh run sets the
previous run (config.json included) and its pictures aside and says what it is about to run; a damaged
checkpoint is refused naming it; a truncated resume state falls back to the epoch files; a changed lr on
``continue_failed_training`` is applied and said; ``on_error``; Ctrl-C.

Every run is a subprocess from a folder that holds ``data/carla_leaderboard2`` (as LEAD's guide runs it), the
scripts through ``bash scripts/...``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from faultlib import snapshot

REPO = Path(__file__).resolve().parents[2]
FAST = ["batch_size=4", "num_workers=0", "max_steps_per_epoch=2", "backend=cpu", "log_scalars_frequency=50",
        "log_images_frequency=1000"]
TINY = ["model_size=tiny", *FAST]
ENV = {"OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, make_built_root) -> Path:
    """A working folder with the root, its shard set and a finished 2-epoch pre-training run in outputs/."""

    cwd = tmp_path_factory.mktemp("trainer")
    root = cwd / "data" / "carla_leaderboard2"
    make_built_root(root, 8)
    _ok(_py(cwd, "pretrain.py", *TINY, "epochs=2"))
    return cwd


def _copy(finished: Path, tmp_path: Path, data: bool = False) -> Path:
    """A private working folder: the finished run copied, the data shared (or copied, to damage it)."""
    cwd = tmp_path / "work"
    shutil.copytree(finished / "outputs", cwd / "outputs")
    if data:
        shutil.copytree(finished / "data", cwd / "data")
    else:
        (cwd / "data").symlink_to(finished / "data")
    return cwd


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **ENV, **(env or {})})


def _py(cwd: Path, script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run([sys.executable, str(REPO / "leadtrain" / script), *args], cwd, env)


def _sh(cwd: Path, script: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _run(["bash", str(REPO / "scripts" / script), *args], cwd, env)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stderr


def _one_error(proc: subprocess.CompletedProcess) -> str:
    """Exit code 2, no traceback, and exactly one ``error: ...`` line, the last one written."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, out[-3000:]
    assert [line for line in proc.stderr.splitlines() if line.strip()][-1] == errors[0]
    assert len(errors[0]) < 600, errors[0]  # never the list of every key
    return errors[0]


# ---- issue 23 item 1: a failed start displaces nothing -----------------------------------------------------------
def test_a_failed_start_leaves_the_previous_run_and_its_pictures_byte_identical(finished, tmp_path):
    cwd = _copy(finished, tmp_path)
    before = snapshot(cwd / "outputs")
    assert any(k.startswith("training_viz/pretrain/") for k in before) and "local_training/pretrain/model_0001.pth" \
        in before
    nowhere = tmp_path / "elsewhere" / "data" / "carla_leaderboard2"
    (nowhere / "data").mkdir(parents=True)
    cases = [  # every cause of issue 23 item 1, run as a user would
        (_sh, "pretrain.sh", ["model=tfv6", f"image_pretrained_weights={tmp_path / 'no_imagenet.safetensors'}", *FAST],
         ["image_pretrained_weights=", "no_imagenet.safetensors"]),  # the TFv6 ImageNet-weights error path
        (_sh, "pretrain.sh", [*TINY, "collection=full_pretrian"], ["unknown collection 'full_pretrian'"]),
        (_py, "pretrain.py", [*TINY, f"load_file={tmp_path / 'nope' / 'model_0030.pth'}"], ["no such file"]),
        (_py, "pretrain.py", [*TINY, "batch_size=1024"], ["batch_size=1024"]),
        (_py, "train.py", [*TINY, f"root={nowhere}", "logdir=outputs/local_training/pretrain"],
         ["no shard set", "python -m leadio.shard"]),
    ]
    for run, script, args, expected in cases:
        line = _one_error(run(cwd, script, *args))
        assert all(e in line for e in expected), (script, args, line)
        assert snapshot(cwd / "outputs") == before, (script, args)


def test_a_fresh_run_sets_the_previous_run_and_its_pictures_aside_and_says_what_it_runs(finished, tmp_path):
    cwd = _copy(finished, tmp_path)
    pre, viz = cwd / "outputs" / "local_training" / "pretrain", cwd / "outputs" / "training_viz" / "pretrain"
    old, old_viz, entries = snapshot(pre), snapshot(viz), len(list(pre.iterdir()))
    err = _ok(_sh(cwd, "pretrain.sh", *TINY, "epochs=1"))
    assert snapshot(pre / "previous_run") == old  # every file, config.json and checksums.json included
    assert snapshot(viz / "previous_run") == old_viz and list(viz.glob("pretrain_e0000_*.png"))
    # issue 23 item 5: the start-up summary
    for field in ("pretrain: model compact (model_size=tiny; model=tfv6 trains the reference's TransFuser v6)",
                  "parameters: ", "trainable); encoders: built-in", "precision: fp32 (mixed_precision=auto) on cpu, "
                  "1 process; batch 4 (4 per process)", "data: root data/carla_leaderboard2, shard set ",
                  "collection full_pretrain", "per epoch: 52 samples, 2 steps (max_steps_per_epoch=2 of 13)",
                  "epochs: 0 to 0 (1 of 1), starting from fresh weights",
                  "loader: backend cpu, 0 decode threads per process, on_error=raise",
                  "logdir: outputs/local_training/pretrain; pictures: outputs/training_viz/pretrain",
                  f"fresh run: the previous run's {entries} files in outputs/local_training/pretrain ("):
        assert field in err, field
    assert err.count("done: 1 epoch in ") == 1 and "1 epochs" not in err
    # the set-aside checkpoint post-trains from its own config.json (the tiny compact model, not TFv6)
    _ok(_py(cwd, "posttrain.py", *FAST, f"load_file={pre / 'previous_run' / 'model_0001.pth'}", "epochs=1",
            "max_steps_per_epoch=1"))
    assert json.loads((cwd / "outputs/local_training/posttrain/config.json").read_text())["model"] == "compact"


# ---- issue 23 item 3: every mistake is one line and exit code 2 ------------------------------------------------
def test_every_trainer_mistake_is_one_line_and_exit_code_2(finished, tmp_path):
    cwd = _copy(finished, tmp_path)
    before = snapshot(cwd / "outputs")
    cases = [
        (_sh, "pretrain.sh", ["epoch=2"], {}, "unknown key 'epoch'; did you mean 'epochs'?"),
        (_sh, "pretrain.sh", [], {"LEAD_TRAINING_CONFIG": "epoch=2"},
         "LEAD_TRAINING_CONFIG: unknown key 'epoch'; did you mean 'epochs'?"),
        (_sh, "posttrain.sh", ["epoch=3"], {}, "unknown key 'epoch'; did you mean 'epochs'?"),
        (_sh, "pretrain_ddp.sh", ["epochz=1"], {}, "unknown key 'epochz'"),  # checked before the launch
        (_sh, "pretrain.sh", ["model=tfv6", "image_architecture=resnet999", *FAST], {}, "resnet999"),
        (_py, "train.py", ["epochs=0"], {}, "epochs must be >= 1"),
    ]
    for run, script, args, env, expected in cases:
        line = _one_error(run(cwd, script, *args, env=env))
        assert expected in line, (script, args, line)
    assert snapshot(cwd / "outputs") == before
    for run, script in ((_sh, "pretrain.sh"), (_py, "train.py")):
        proc = run(cwd, script, "--help")
        assert proc.returncode == 0 and "epochs=31" in proc.stdout and "--verbose" in proc.stdout, script


# ---- issue 22 item 5: checksums ------------------------------------------------------------------------------------
def test_a_damaged_checkpoint_is_refused_naming_it(finished, tmp_path):
    cwd = _copy(finished, tmp_path)
    pre = cwd / "outputs" / "local_training" / "pretrain"
    data = bytearray((pre / "model_0001.pth").read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    (pre / "model_0001.pth").write_bytes(bytes(data))
    before = snapshot(cwd / "outputs")
    line = _one_error(_py(cwd, "pretrain.py", *TINY, "epochs=3", "continue_failed_training=true"))
    assert f"{Path('outputs/local_training/pretrain/model_0001.pth')} is damaged" in line and "xxh3-128" in line
    line = _one_error(_py(cwd, "posttrain.py", *FAST, f"load_file={pre / 'model_0001.pth'}"))
    assert f"{pre / 'model_0001.pth'} is damaged" in line
    assert snapshot(cwd / "outputs") == before


def test_a_truncated_resume_state_falls_back_to_the_epoch_files_it_points_at(finished, tmp_path):
    cwd = _copy(finished, tmp_path)
    pre = cwd / "outputs" / "local_training" / "pretrain"
    state = pre / "resume" / "state.pth"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    err = _ok(_py(cwd, "pretrain.py", *TINY, "epochs=3", "continue_failed_training=true"))
    assert "resume/state.pth is damaged" in err and "continuing from the epoch files it points at, model_0001.pth " \
        "and its siblings (training continues at the start of epoch 2)" in err
    assert (pre / "model_0002.pth").exists() and "epochs: 2 to 2 (1 of 3)" in err
    optim = torch.load(pre / "optimizer_0002.pth", weights_only=True)
    assert {float(s["step"]) for s in optim["state"].values()} == {6.0}  # 3 epochs x 2 steps: it continued


# ---- issue 22 item 11, and resumes the loader refuses -------------------------------------------------------------
def test_a_changed_lr_on_continue_is_applied_and_said_and_what_cannot_change_is_refused(finished, tmp_path):
    cwd = _copy(finished, tmp_path)
    pre = cwd / "outputs" / "local_training" / "pretrain"
    before = snapshot(cwd / "outputs")
    line = _one_error(_py(cwd, "pretrain.py", *TINY, "epochs=3", "continue_failed_training=true",
                          "max_steps_per_epoch=3"))
    assert "this run has 3 steps per epoch, the saved one 2" in line
    line = _one_error(_py(cwd, "pretrain.py", *TINY, "epochs=3", "continue_failed_training=true", "seed=1"))
    assert "loader state has seed=0, this loader has 1" in line  # a ValueError of loader.load_state_dict
    assert snapshot(cwd / "outputs") == before
    err = _ok(_py(cwd, "pretrain.py", *TINY, "epochs=3", "continue_failed_training=true", "lr=0.05"))
    assert "continue_failed_training: applied the changed lr 0.0003 -> 0.05 from the next step on" in err
    optim = torch.load(pre / "optimizer_0002.pth", weights_only=True)
    sched = torch.load(pre / "scheduler_0002.pth", weights_only=True)
    assert optim["param_groups"][0]["initial_lr"] == 0.05 and sched["base_lrs"] == [0.05]
    assert 0 < optim["param_groups"][0]["lr"] <= 0.05 and json.loads((pre / "config.json").read_text())["lr"] == 0.05


def test_a_loader_state_refused_on_resume_is_one_line_and_leaves_the_logdir(finished, tmp_path, monkeypatch, capsys):
    """What the loader raises for a state saved on a rebuilt shard set (a ValueError subclass) ends the run
    with one line and exit code 2 before anything is written."""
    from leadio.dataset import LeadLoader
    from leadtrain.pretrain import main

    class RebuiltSetError(ValueError):
        pass

    def refuse(self, state):
        raise RebuiltSetError("loader state belongs to shard set full_pretrain-x as built before: 3 routes were "
                              "added since; start a fresh run")

    cwd = _copy(finished, tmp_path)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(LeadLoader, "load_state_dict", refuse)
    before = snapshot(cwd / "outputs")
    assert main([*TINY, "epochs=3", "continue_failed_training=true", "visualize_training=false"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and "3 routes were added since" in err[0]
    assert snapshot(cwd / "outputs") == before


# ---- issue 22 item 7, the trainer's part ----------------------------------------------------------------------------
def _damage_second_sample_of_the_first_batch(root: Path) -> str:
    from leadio.dataset import open_dataset
    from leadio.shard.shardset import open_shard_set

    set_dir = next((root / "shards").glob("full_pretrain-*"))
    loader = open_dataset(set_dir, batch_size=4, backend="cpu", world_size=1, rank=0, seed=0, num_workers=0)
    row = int(loader.plan(0).rows[1])
    loader.close()
    ss = open_shard_set(set_dir)
    cat = ss.catalog
    path = ss.shard_path(int(cat["shard"][row]))
    data = bytearray(path.read_bytes())
    for offset, size in zip(cat["member_offset"][row], cat["member_size"][row], strict=True):
        if size:
            data[int(offset) + int(size) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return str(cat["sample_key"][row])


def test_on_error_raise_names_shard_sample_and_the_rebuild_and_skip_counts_per_epoch(finished, tmp_path):
    cwd = _copy(finished, tmp_path, data=True)
    key = _damage_second_sample_of_the_first_batch(cwd / "data" / "carla_leaderboard2")
    line = _one_error(_py(cwd, "pretrain.py", *TINY, "epochs=1"))
    assert f"sample {key}" in line and "shard " in line and "python -m leadio.shard" in line and \
        "on_error=skip" in line, line
    err = _ok(_py(cwd, "pretrain.py", *TINY, "epochs=1", "on_error=skip"))
    assert f"1 unreadable samples skipped (on_error=skip; e.g. {key}" in err
    pre = cwd / "outputs" / "local_training" / "pretrain"  # the failed run left no checkpoint: it never replaces
    assert (pre / "previous_run" / "model_0001.pth").exists()  # the finished run set aside before it
    assert (pre / "previous_run_without_checkpoint" / "config.json").exists()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(pre))
    events.Reload()
    assert [s.value for s in events.Scalars("epoch/samples_skipped")] == [1.0]


# ---- Ctrl-C -------------------------------------------------------------------------------------------------------
def test_ctrl_c_is_one_line_saying_how_to_continue_and_exit_code_130(finished, tmp_path):
    cwd = _copy(finished, tmp_path)
    logdir = cwd / "outputs" / "local_training" / "interrupted"
    proc = subprocess.Popen([sys.executable, str(REPO / "leadtrain" / "pretrain.py"), *TINY, "epochs=5",
                             "max_steps_per_epoch=0", f"logdir={logdir}"], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(logdir.glob("events.out.tfevents.*")):
        time.sleep(0.1)
    time.sleep(1.0)  # in the first epoch's steps
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1 and "continue_failed_training=true" in lines[0] and str(logdir) in lines[0]
