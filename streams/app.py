"""The Faust app module: ``faust -A streams.app worker``.

Settings come from the environment once, here at the edge. A bad value ends the process
with one line naming the variable, not a traceback. LOG_LEVEL and LOG_FORMAT apply from here
on, before the app is built (``streams.ops.logs``).
"""

from __future__ import annotations

import sys

from streams.core.errors import MirrorError
from streams.ops.logs import configure_logging
from streams.settings import Settings
from streams.worker import build_app

try:
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    app = build_app(settings)
except MirrorError as exc:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None
