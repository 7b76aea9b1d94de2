"""How a batch is applied: the agents (one per entity), the one function that orders a batch's
effects (``lane``), the SQL side of a batch (``sql_applier``), dead letters, the forwarder of
repartitioned topics, the offsets noted as applied, holds and retries."""
