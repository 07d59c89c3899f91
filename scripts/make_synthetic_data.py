"""Write synthetic LEAD routes (see leadio.synth): python scripts/make_synthetic_data.py --root R --routes N ..."""

from leadio.synth import main

if __name__ == "__main__":
    raise SystemExit(main())
