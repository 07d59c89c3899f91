"""Perception pre-training: ``python leadtrain/pretrain.py key=value ...`` (or ``accelerate launch`` it).

Defaults: the ``full_pretrain`` collection, perception losses only, logdir ``outputs/local_training/pretrain``;
with ``use_planning_decoder=true`` (e.g. ``load_file=<pretrain model> use_planning_decoder=true``, as LEAD) the
``full_posttrain`` collection and ``outputs/local_training/posttrain``, unless given.
Any `leadtrain.config.TrainingConfig` field can be overridden as ``key=value``.

Flags: ``--help`` (this text and every key with its default), ``--verbose`` (an error shows its traceback),
``--check`` (check the arguments, and that ``load_file`` exists, then exit: what the shell scripts run first).

A mistake (an unknown key, a missing shard set or ``load_file``, an unknown collection, a batch larger than the
data, a damaged checkpoint, a resume that does not fit) prints one line, ``error: ...``, and exits with 2, leaving
the logdir as it was. Ctrl-C exits with 130, saying that ``continue_failed_training=true`` continues.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from leadio.cli import USER_ERRORS, one_line
from leadtrain.config import ConfigError, TrainingConfig

DEFAULTS: dict = {}  # collection and logdir follow use_planning_decoder (auto); a load_file's config.json is the base
FLAGS = ("--verbose", "--check")


def print_help(doc: str, defaults: dict) -> None:
    """``doc``, then every key with its default (under ``defaults``), a few to a line."""
    lines, line = [], "keys and defaults:"
    for k, v in TrainingConfig(**defaults).to_dict().items():
        item = f" {k}={v},"
        if len(line) + len(item) > 116:
            lines.append(line)
            line = " "
        line += item
    print(doc)
    print("\n".join([*lines, line.rstrip(",")]))


def _rank() -> int:
    return int(os.environ.get("RANK", "0") or 0)


def _error(text: str) -> int:
    """One line on stderr (rank 0's, or naming its rank), exit code 2."""
    rank = _rank()
    print(f"error{f' (rank {rank})' if rank else ''}: {text}", file=sys.stderr, flush=True)
    return 2


def _check(cfg: TrainingConfig) -> None:
    """What can be checked before a shard build or a launch, beyond the config itself."""
    if cfg.load_file and not cfg.continue_failed_training and not Path(cfg.load_file).is_file():
        raise ConfigError(f"load_file={cfg.load_file}: no such file")


def _done(result) -> None:
    n, times = result.epochs_done, "/".join(f"{t:.1f}" for t in result.seconds_per_epoch)
    log = logging.getLogger("leadtrain")
    if n <= 0:
        log.info("done: nothing to train, the run in %s had finished its epochs (raise epochs= to train on)",
                 result.logdir)
        return
    log.info("done: %d epoch%s in %s s%s, data stall %.1f%%, checkpoints in %s", n, "s" if n != 1 else "", times,
             " each" if n != 1 else "", result.data_stall_pct, result.logdir)


def main(argv: list[str] | None = None, defaults: dict = DEFAULTS) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print_help(__doc__, defaults)
        return 0
    verbose, check = "--verbose" in argv, "--check" in argv
    argv = [a for a in argv if a not in FLAGS]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = None
    try:
        cfg = TrainingConfig.from_cli(argv, defaults)
        _check(cfg)
        if check:
            return 0
        from leadtrain.loop import run

        result = run(cfg)
    except KeyboardInterrupt:
        if _rank() == 0:
            where = f" in {cfg.logdir}" if cfg is not None else ""
            print(f"interrupted: to continue{where}, rerun the same command with continue_failed_training=true "
                  f"(it resumes from the last resume state or epoch checkpoint)", file=sys.stderr, flush=True)
        return 130
    except ConfigError as e:
        return _error(one_line(e))
    except USER_ERRORS as e:
        if verbose:
            raise
        return _error(f"{one_line(e)} (--verbose shows the traceback)")
    if result.main:
        _done(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
