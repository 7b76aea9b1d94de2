"""The alert rules and the Grafana dashboard (``deploy/``) name only metrics the worker exports,
with labels those metrics have: the names come from the metrics module's registry.

Whether each expression is valid PromQL is checked by Prometheus itself
(tests/integration/test_alert_rules.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from streams.ops import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

#: Series of Prometheus' own (not the worker's) that the rules may use, with their labels.
PROMETHEUS_OWN = {"up": set()}
#: Labels Prometheus adds to every scraped series.
TARGET_LABELS = {"job", "instance"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
KEYWORDS |= {"group_left", "group_right", "inf", "nan"}
_STRING = re.compile(r'"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'")
_SELECTOR = re.compile(r"([A-Za-z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\s*\)$")


def series_names(family: Metric) -> list[str]:
    """Return the names of the series a metric family exports (a labelled metric with no
    child yet has no samples to read them from)."""
    return {
        "counter": [f"{family.name}_total"],
        "histogram": [f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"],
        "info": [f"{family.name}_info"],
    }.get(family.type, [family.name])


def exported() -> dict[str, set[str]]:
    """Return every series name the worker's registry exports, with that metric's labels."""
    labels: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for name in [*series_names(family), *(sample.name for sample in family.samples)]:
            labels.setdefault(name, set()).update(*(s.labels for s in family.samples))
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                for name in series_names(family):
                    # prometheus_client keeps the declared label names in _labelnames only.
                    labels[name].update(value._labelnames)
                    if name.endswith("_bucket"):
                        labels[name].add("le")
    return labels


def metric_uses(expr: str) -> Iterator[tuple[str, set[str]]]:
    """Yield each metric an expression selects, with the labels its matchers name."""
    expr = _STRING.sub('""', expr)
    for match in _SELECTOR.finditer(expr):
        if match.group(1) and match.group(1) not in KEYWORDS:
            yield match.group(1), set(_MATCHER_LABEL.findall(match.group(2)))
    expr = _SELECTOR.sub(" ", expr)  # each named there, once
    expr = _GROUPING.sub(" ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    for name, call in _IDENTIFIER.findall(expr):
        if not call and name not in KEYWORDS:
            yield name, set()


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    return loaded


def dashboard_expressions() -> list[str]:
    found = [t["expr"] for p in panels(dashboard()["panels"]) for t in p.get("targets", [])]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            values = _LABEL_VALUES.fullmatch(query["query"])
            assert values, f"variable {variable['name']}: not label_values(...): {query}"
            selector, label = values.groups()
            found.append(selector)
            found.append(f"{selector.split('{')[0]}{{{label}=~''}}")  # the label must exist
    return found


def assert_all_exported(expressions: list[str], where: str) -> None:
    known = {**exported(), **PROMETHEUS_OWN}
    wrong = []
    for expr in expressions:
        for name, labels in metric_uses(expr):
            if name not in known:
                wrong.append(f"{name} (not exported) in: {expr}")
            elif unknown := labels - known[name] - TARGET_LABELS:
                wrong.append(f"{name} has no label {sorted(unknown)}, in: {expr}")
    assert not wrong, f"{where}:\n" + "\n".join(wrong)


def test_the_extraction_finds_names_and_matcher_labels() -> None:
    expr = (
        'sum by (job, topic) (rate(a_total{x="1", y=~"$v"}[5m])) - on (job) b '
        "and (c unless c offset 1h) > 0 or vector(0)"
    )
    assert sorted((n, sorted(ls)) for n, ls in metric_uses(expr)) == [
        ("a_total", ["x", "y"]),
        ("b", []),
        ("c", []),
        ("c", []),
    ]


def test_the_alert_rules_use_exported_metrics() -> None:
    expressions = rule_expressions()
    assert len(expressions) == 11
    assert_all_exported(expressions, "alerts.yml")


def test_the_dashboard_uses_exported_metrics() -> None:
    expressions = dashboard_expressions()
    assert len(expressions) > 30
    assert_all_exported(expressions, "dashboard.json")


def test_the_dashboard_shows_every_metric_the_alerts_watch() -> None:
    on_dashboard = {name for e in dashboard_expressions() for name, _ in metric_uses(e)}
    alerted = {name for e in rule_expressions() for name, _ in metric_uses(e)}
    assert alerted <= on_dashboard


@pytest.mark.parametrize(
    "expr",
    [
        "mirror_batch_size_count",  # renamed: mirror_batch_records
        'mirror_consumer_lag_records{entity="planet"}',  # lag has no entity label
    ],
)
def test_a_name_or_label_the_worker_does_not_export_is_caught(expr: str) -> None:
    with pytest.raises(AssertionError):
        assert_all_exported([expr], "example")


def test_the_dashboard_panels_are_distinct_and_use_its_data_source_variable() -> None:
    board = dashboard()
    every = list(panels(board["panels"]))
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids))
    for panel in every:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
    names = [variable["name"] for variable in board["templating"]["list"]]
    assert names == ["datasource", "job", "entity"]
