"""`python -m taskflow_bench`: the same as the `taskflow-bench` command."""

import sys

from taskflow_bench.cli import main

sys.exit(main())
