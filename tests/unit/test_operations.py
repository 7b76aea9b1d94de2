"""What ``status`` makes of workers' metrics: the end-to-end delay summed over workers."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams.cli.operations import DelaySummary, delay_summary


def worker_metrics(delays: dict[str, list[float]]) -> str:
    registry = CollectorRegistry()
    histogram = Histogram(
        "mirror_end_to_end_delay_seconds",
        "test",
        ["entity"],
        buckets=(1, 10, 60),
        registry=registry,
    )
    for kind, values in delays.items():
        for value in values:
            histogram.labels(kind).observe(value)
    return generate_latest(registry).decode()


def test_delays_are_summed_over_workers_per_entity() -> None:
    one = worker_metrics({"planet": [0.5, 0.5, 5.0], "moon": [100.0]})
    two = worker_metrics({"planet": [0.5, 30.0]})
    summary = delay_summary([one, two], "planet")
    assert summary == DelaySummary(batches=5, mean=36.5 / 5, p50=1.0, p99=60.0)
    moon = delay_summary([one, two], "moon")
    assert moon is not None and moon.p50 == math.inf


def test_no_batch_applied_is_no_summary() -> None:
    assert delay_summary([worker_metrics({})], "planet") is None
    assert delay_summary([], "planet") is None
