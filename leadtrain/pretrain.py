"""Perception pre-training: ``accelerate launch leadtrain/pretrain.py key=value ...`` (or plain ``python``).

Defaults: the ``full_pretrain`` collection, perception losses only, logdir ``outputs/local_training/pretrain``;
with ``use_planning_decoder=true`` (e.g. ``load_file=<pretrain model> use_planning_decoder=true``, as LEAD) the
``full_posttrain`` collection and ``outputs/local_training/posttrain``, unless given.
Any `leadtrain.config.TrainingConfig` field can be overridden as ``key=value``.
"""

from __future__ import annotations

import logging
import sys

from leadtrain.config import ConfigError, TrainingConfig
from leadtrain.loop import run

DEFAULTS: dict = {}  # collection and logdir follow use_planning_decoder (auto); a load_file's config.json is the base


def main(argv: list[str] | None = None, defaults: dict = DEFAULTS) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        print("keys and defaults:", ", ".join(f"{k}={v}" for k, v in TrainingConfig().to_dict().items()))
        return 0
    try:
        cfg = TrainingConfig.from_cli(argv, defaults)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = run(cfg)
    if result.seconds_per_epoch:
        logging.getLogger("leadtrain").info(
            "done: %d epochs in %s s each, data stall %.1f%%, checkpoints in %s", result.epochs_done,
            "/".join(f"{t:.1f}" for t in result.seconds_per_epoch), result.data_stall_pct, result.logdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
