"""``python -m streams``: the operator's command line."""

from streams.cli.main import main

raise SystemExit(main())
