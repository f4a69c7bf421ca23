"""The Grafana dashboard and the Prometheus alert rules use only metrics `/metrics` exposes."""

import json
import re
from pathlib import Path

import pytest
import yaml
from django.test import Client as HttpClient
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "mailqueue.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

# PromQL's own words, and `up`, which Prometheus itself records for every scrape.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "rate", "irate", "increase", "by", "without", "on",
    "ignoring", "group_left", "group_right", "and", "or", "unless", "histogram_quantile",
    "clamp_min", "clamp_max", "absent", "offset", "bool", "up", "le", "e",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label matchers, strings, durations and
    grouping label lists removed first)."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {name for name in names if name not in PROMQL_WORDS}


def exposed_names() -> set[str]:
    """Every sample name a real scrape can carry (counters' `_total`, histograms' parts)."""
    response = HttpClient().get("/metrics")
    assert response.status_code == 200
    names = set()
    for family in text_string_to_metric_families(response.content.decode()):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{part}" for part in ("bucket", "sum", "count"))
    return names


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_exprs() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_metric_names_are_found_in_expressions():
    """The name extraction itself: names kept, PromQL words and labels dropped."""
    expr = 'sum by (status) (rate(email_jobs_processed_total{status="failed"}[5m])) > 0.05'
    assert metric_names(expr) == {"email_jobs_processed_total"}


@pytest.mark.django_db
def test_dashboard_and_alerts_use_only_exposed_metrics():
    """A renamed metric breaks this test, not a production dashboard."""
    exposed = exposed_names()
    for source, exprs in (("dashboard", dashboard_exprs()), ("alerts", alert_exprs())):
        assert exprs, source
        used = set().union(*(metric_names(expr) for expr in exprs))
        assert used <= exposed, f"{source} uses unknown metrics: {sorted(used - exposed)}"


def test_dashboard_covers_the_operators_questions():
    """Throughput, failures, percentiles, queues, age, workers, provider errors, webhooks."""
    text = " ".join(dashboard_exprs())
    for needed in (
        "email_jobs_processed_total",
        "histogram_quantile(0.99",
        "queue_size",
        "oldest_queued_email_age_seconds",
        "workers",
        "email_provider_errors_total",
        "email_webhook_events_total",
        "email_provider_circuit_state",
    ):
        assert needed in text
    names = {
        rule["alert"]
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for rule in group["rules"]
    }
    assert {"MailqueueOldestEmailTooOld", "MailqueueFailureRateHigh", "MailqueueNoWorkers"} <= names
    assert "MailqueueProviderCircuitOpen" in names
