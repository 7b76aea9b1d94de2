"""Operating a worker: metrics, freshness, its web pages, logging, the checks before start,
what changes under it (topics made again or grown), the dead letters redriven, and the last
resort when a table recovery stalls."""
