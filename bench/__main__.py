"""`python -m bench`: run every benchmark and write bench/results/<date>-<machine>.{json,md} (see bench/run_all.py)."""

import sys

from bench.run_all import main

sys.exit(main())
