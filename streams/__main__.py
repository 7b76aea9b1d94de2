"""``python -m streams``: the operator's command line (the ``entity-mirror`` script's)."""

from streams.cli.main import main

raise SystemExit(main(prog="python -m streams"))
