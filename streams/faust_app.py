"""The Faust app class and options every app of the worker gets (workarounds 9-11).

Workarounds of faust-streaming 0.15.3, numbered across the ``faust_*`` modules (their index:
docs/internals.md, "Faust's workarounds").

9. **The consumer class is chosen privately** (``App._new_transport``):
   :class:`MirrorTransportApp` gives the app :class:`MirrorConsumer`;
   :func:`tables.faust_store.recovery_remaining` reads the recovery service
   ``TableManagerT`` does not declare.

10. **Faust's settings take environment variables over the app's arguments**
    (``faust/types/settings/base.py``, ``SettingsRegistry._init_settings``: a setting's
    ``env_name`` read from ``Settings.env``, which ``Settings._init_env_prefix`` makes
    ``os.environ`` unless given one, replaces the keyword argument). ``BROKER_URL`` beside
    KAFKA_BROKER moved the worker to another cluster, ``WEB_BIND=0.0.0.0`` exposed the API on
    every interface, ``APP_DATADIR`` and ``NODE_CANONICAL_URL`` won over DATA_DIR and
    CANONICAL_URL, and ``APP_VERSION=1.2.3`` (a common variable) stops Faust with a ValueError.
    :data:`FAUST_OPTIONS` gives the app an empty environment: the worker's settings are the
    only source. Test: BROKER_URL winning over ``broker=``, and not with FAUST_OPTIONS.

11. **An unknown table on Faust's router pages is a 500** (``faust/app/router.py``,
    ``Router._get_table``: ``self.app.tables[name]`` raises KeyError, which
    ``faust/web/apps/router.py`` lets through in ``TableDetail.get``, a 500 with a traceback,
    and turns into a 503 to retry forever in ``TableKeyDetail.get``): :class:`MirrorRouter`
    raises Faust's ``NotFound`` there, a JSON 404 on both pages. Test: Faust's KeyError, and
    MirrorRouter's NotFound.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import faust
from faust.app.router import Router
from faust.web.exceptions import NotFound

from streams.intake.faust_consumer import MirrorConsumer
from streams.intake.handoff import Handoff


class MirrorTransportApp(faust.App):
    """A Faust app whose transport makes :class:`MirrorConsumer`s (this app's only), and
    what they need of it (``streams.intake.faust_consumer.MirrorHost``)."""

    handoff: Handoff
    """Given by ``streams.worker.build_app``."""

    async def on_mirror_revoked(self, revoked: set[Any]) -> None:
        """Finish the batches of ``revoked`` partitions in flight (none here)."""

    def _new_transport(self) -> Any:
        transport: Any = super()._new_transport()
        transport.Consumer = MirrorConsumer
        return transport


class MirrorRouter(Router):
    """Faust's router, answering 404 (not a 500) for a table the app does not have."""

    def _get_table(self, name: str) -> Any:
        try:
            return super()._get_table(name)
        except KeyError:
            raise NotFound("unknown table", name=name) from None


#: Options every app of the worker gets for the workarounds above (10 and 11): no environment
#: for Faust's settings, and the router answering 404 for an unknown table.
FAUST_OPTIONS: Mapping[str, Any] = {"env": {}, "Router": MirrorRouter}
