"""Write synthetic LEAD routes (see leadio.synth): python scripts/make_synthetic_data.py --root R --routes N ..."""

import sys

from leadio.synth import main

if __name__ == "__main__":
    sys.exit(main(prog="python scripts/make_synthetic_data.py"))
