"""`python -m convbench.cli ...`: the same as the `convbench` console script."""

from convbench.cli.commands import main

raise SystemExit(main())
