"""Local Kafka and PostgreSQL servers for tests and the main job (development only)."""
