"""Our own Kafka I/O: the producers of our own, record batches, topics and admin reads, topic
ids, the broker failures said in one line, and the workarounds of aiokafka's bugs."""
