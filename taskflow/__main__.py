"""`python -m taskflow` is `taskflow`."""

from taskflow.cli import main

raise SystemExit(main())
