"""How records arrive: Faust's consumer hands mirrored partitions' records over in batches
(``faust_consumer``) through the hand-off (``handoff``) to each entity's feeds (``feed``), once
each partition is positioned at its stored offset (``positioner``)."""
