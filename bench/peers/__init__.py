"""The tools users would pick instead of this worker, run by the bench on the same data.

One module per peer, each with the same four names, so the driver treats them alike:
``available()`` raises :class:`PeerSkipped` when the peer cannot run here; ``encode(events)``
gives the records its topic gets (the worker's, or re-encoded as the peer needs them);
``run(...)`` consumes that topic from the start into an empty table until caught up and
returns the :class:`bench.measure.CatchUp`; ``LIVE_ROWS_SQL`` reads the table's live rows
(``uuid``, ``name``) for the check against the newest state of each key.
"""

from __future__ import annotations


class PeerSkipped(Exception):
    """A peer cannot run on this machine; the message says why in one line."""
