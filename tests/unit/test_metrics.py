"""What ``/metrics`` exports: no ``*_created`` series, the process' own metrics, names that
say their unit, and the counters an alert watches present at 0 before their first count."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.ops import metrics

#: What a gauge's or a histogram's name may end in: the unit of its value.
UNITS = ("_seconds", "_bytes", "_records", "_entries", "_partitions")


def exported() -> str:
    return generate_latest(metrics.registry).decode()


def test_counters_and_histograms_export_no_created_series() -> None:
    metrics.EVENTS.labels("unit-test", "unit-topic", "applied").inc()
    metrics.BATCH_RECORDS.labels("unit-test").observe(10)
    metrics.RECOVERY_STALLS.inc(0)
    text = exported()
    assert 'mirror_events_total{entity="unit-test",outcome="applied",topic="unit-topic"}' in text
    assert 'mirror_batch_records_count{entity="unit-test"}' in text
    assert "_created" not in text


def test_the_process_metrics_are_on_the_registry() -> None:
    names = {
        sample.name for f in text_string_to_metric_families(exported()) for sample in f.samples
    }
    for name in (
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
        "python_info",
        "python_gc_collections_total",
    ):
        assert name in names


def test_every_name_says_its_unit() -> None:
    wrong = []
    for family in metrics.registry.collect():
        if not family.name.startswith("mirror_"):
            continue
        if family.type == "counter":
            continue  # exported as <name>_total: a count of what the name says
        if family.type == "info":
            assert family.name == "mirror_build"
            continue
        if not family.name.endswith(UNITS):
            wrong.append(f"{family.name} ({family.type})")
    assert not wrong, f"gauges and histograms without a unit in their name: {wrong}"


def test_counters_end_in_total_in_the_text() -> None:
    counters = [f.name for f in metrics.registry.collect() if f.type == "counter"]
    text = exported()
    for name in counters:
        assert f"# TYPE {name}_total counter" in text


def test_a_declared_entity_has_its_outcomes_and_failures_at_zero() -> None:
    metrics.declare_entity("declared-kind", "declared-topic")
    text = exported()
    for outcome in ("applied", "skipped", "rejected"):
        sample = (
            f'mirror_events_total{{entity="declared-kind",outcome="{outcome}",'
            'topic="declared-topic"} 0.0'
        )
        assert sample in text
    assert 'mirror_batch_failures_total{entity="declared-kind"} 0.0' in text


def test_the_build_info_names_the_version() -> None:
    from streams import __version__

    metrics.BUILD.info({"version": __version__})
    assert f'mirror_build_info{{version="{__version__}"}} 1.0' in exported()
