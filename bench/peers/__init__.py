"""The tools users would pick instead of this worker, run by the bench on the same data.

One module per peer, each with the same names, so the bench treats them alike
(``bench.paths.PeerPath``): ``LABEL`` names it in the report; ``available()`` raises
:class:`PeerSkipped` when the peer cannot run here; ``ENCODING`` is ``json`` when it reads
the worker's records as they are (it then shares the worker's topic), else the name of its
own topic's encoding, and ``encode_event(event)`` gives the record its topic gets;
``launch(bootstrap, db_url, topic, workdir, batch, name)`` creates its empty table in
``db_url`` and says how to start it (``bench.launch.Launch``), its consumer group named
after ``name``, unique in the run (a peer may run twice on a topic, on two databases);
``TABLE`` is where its rows land and ``LIVE_ROWS_SQL`` reads its live rows (``uuid``,
``name``) for the check against the newest state of each key.
"""

from __future__ import annotations


class PeerSkipped(Exception):
    """A peer cannot run on this machine; the message says why in one line."""
