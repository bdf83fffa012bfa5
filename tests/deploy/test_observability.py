"""Alert rules and dashboards use only metrics the code exports (issue 17): every metric name in a PromQL
expression of deploy/observability/ must be registered by the services' modules (a renamed metric fails here),
and every event type a rule filters on must be a contract event type."""

import importlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY

from contracts.events import TOPIC_BY_TYPE

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
SERVICES = sorted(p.name for p in (ROOT / "services").glob("*-svc") if (p / "pyproject.toml").is_file())
PROMETHEUS_SERIES = {"up"}  # written by Prometheus itself for every scrape target
PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "clamp_min",
    "clamp_max", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
    "offset", "abs", "absent", "delta", "deriv", "topk", "bottomk", "time", "vector", "scalar",
}  # fmt: skip


def _expressions() -> list[str]:
    found: list[str] = []
    for path in OBSERVABILITY.rglob("*.yaml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(rule["expr"] for rule in group["rules"])
    for path in OBSERVABILITY.rglob("*.json"):
        dashboard: dict[str, Any] = json.loads(path.read_text())
        found.extend(target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", []))
    return found


def metric_names(expr: str) -> set[str]:
    """The series a PromQL expression selects: label matchers, label lists, ranges, strings and numbers out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        word, call = match.group(1), match.group(2)
        if call or word in PROMQL_WORDS or re.fullmatch(r"\d+(\.\d+)?(e-?\d+)?", word):
            continue
        names.add(word)
    return names


def registered_series() -> set[str]:
    for service in SERVICES:
        importlib.import_module(f"{service.replace('-', '_')}.main")
    names: set[str] = set()
    for metric in REGISTRY.collect():
        names.add(metric.name)
        for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
            names.add(metric.name + suffix)
    return names


def test_the_metric_name_parser_finds_metrics_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(pb_x_seconds_bucket{route="/v1/a"}[5m]))) / clamp_min(up, 1e-9) > 3'
    )
    assert metric_names(expr) == {"pb_x_seconds_bucket", "up"}


def test_every_metric_the_rules_and_dashboards_use_is_exported() -> None:
    expressions = _expressions()
    assert len(expressions) >= 10
    used = set().union(*(metric_names(expr) for expr in expressions))
    for required in ("pb_consumer_lag", "pb_outbox_backlog", "pb_http_request_seconds_bucket"):
        assert required in used
    missing = used - registered_series() - PROMETHEUS_SERIES
    assert not missing, f"deploy/observability uses metrics the code does not export: {sorted(missing)}"


def test_event_types_in_rules_are_contract_event_types() -> None:
    types = set().union(*(re.findall(r'type="([^"]+)"', expr) for expr in _expressions()))
    assert types and types <= set(TOPIC_BY_TYPE), sorted(types - set(TOPIC_BY_TYPE))
