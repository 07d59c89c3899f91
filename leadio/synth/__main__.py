"""``python -m leadio.synth``: see `leadio.synth.cli`."""

from leadio.synth.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
