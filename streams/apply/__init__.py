"""How a batch is applied: the agents (one per entity), the one function that orders a batch's
effects (``checkpoint``), the SQL side of a batch (``mirror``), dead letters, the forwarder of
repartitioned topics, the offsets noted as applied, holds and retries."""
