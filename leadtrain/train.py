"""The reference's current entry point: ``python leadtrain/train.py key=value ...``, as its guide's
``python3 lead/training/train.py``:

    python leadtrain/train.py logdir=outputs/local_training/pretrain
    python leadtrain/train.py logdir=outputs/local_training/posttrain \\
        load_file=outputs/local_training/pretrain/model_0030.pth use_planning_decoder=true

Same keys, same logdir layout, same sources (defaults, the ``config.json`` beside ``load_file``,
``LEAD_TRAINING_CONFIG``, the command line) as ``leadtrain/pretrain.py``, which it is: the phase follows
``use_planning_decoder``. Run it from the folder holding ``data/carla_leaderboard2`` (``root=`` otherwise), after
the shard set is built (``python -m leadio.shard``, or ``bash scripts/pretrain.sh`` once). Under several
processes: ``accelerate launch leadtrain/train.py ...``. Flags: ``--help``, ``--verbose``, ``--check``; a mistake
is one line and exit code 2.
"""

from __future__ import annotations

import sys

from leadtrain.pretrain import DEFAULTS, print_help
from leadtrain.pretrain import main as _main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print_help(__doc__, DEFAULTS)
        return 0
    return _main(argv, DEFAULTS)


if __name__ == "__main__":
    raise SystemExit(main())
