"""Planning post-training: loads the pre-trained model non-strictly, adds the planner, restarts at epoch 0.

``python leadtrain/posttrain.py load_file=outputs/local_training/pretrain/model_0030.pth`` (or ``accelerate
launch``; default load_file: the newest complete ``model_XXXX.pth`` of ``outputs/local_training/pretrain``). The
pre-training ``config.json`` beside ``load_file`` is the base config; ``key=value`` arguments override it. A
new optimizer, scheduler and scaler are created; the ``full_posttrain`` collection is planned over the
pre-training shard set (one build serves both phases). Flags and errors as ``leadtrain/pretrain.py``:
``--verbose``, ``--check``; a mistake is one line and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

from leadtrain.checkpoint import latest_epoch_checkpoint
from leadtrain.config import ConfigError, parse_overrides
from leadtrain.pretrain import FLAGS, print_help
from leadtrain.pretrain import main as _main

DEFAULTS = {"use_planning_decoder": True, "continue_failed_training": False,
            "logdir": "outputs/local_training/posttrain"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print_help(__doc__, DEFAULTS)  # the phase's own: collection, logdir, derived keys
        return 0
    try:
        given = parse_overrides([a for a in argv if "=" in a and a not in FLAGS])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "load_file" not in given and not given.get("continue_failed_training"):
        pretrain_dir = Path("outputs/local_training/pretrain")
        latest = latest_epoch_checkpoint(pretrain_dir)
        if latest is None:
            print(f"error: no load_file given and no pre-trained model in {pretrain_dir}; run scripts/pretrain.sh "
                  f"first or pass load_file=<path to model_XXXX.pth>", file=sys.stderr)
            return 2
        argv.append(f"load_file={latest[1]}")
    # the pretrain config is the base; these keys are what makes it post-training
    return _main(argv + [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in DEFAULTS.items()
                         if k not in given], defaults={})


if __name__ == "__main__":
    raise SystemExit(main())
