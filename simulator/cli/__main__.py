"""`python -m simulator.cli`: the `llmsim` command line."""

import sys

from simulator.cli import main

sys.exit(main())
