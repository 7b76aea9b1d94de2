"""``python -m streams``: the operator's command line."""

from streams.cli import main

raise SystemExit(main())
