"""Local Kafka, PostgreSQL and MariaDB servers for tests and the main job (development only)."""
