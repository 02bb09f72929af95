"""The monitoring artefacts stay true: the alert rules pass promtool (syntax and their
unit tests), and every metric the rules and the Grafana dashboard query is one the
service (or its jobs' --metrics-file) really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics_core import Metric

from healthforms.metrics import JOB_METRICS, Metrics

ROOT = Path(__file__).resolve().parent.parent.parent
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "healthforms.json"
METRIC_TOKEN = re.compile(r"\bhealthforms_[a-z0-9_]+\b")
# What issue 17 asks the rules to cover (each is unit-tested in alerts_test.yml).
REQUIRED_ALERTS = {
    "HealthformsRedisDown",
    "HealthformsDegradedDecisions",
    "HealthformsRedisEvictionPolicyUnsafe",
    "HealthformsHigh5xxRate",
    "HealthformsAuditChainCheckFailing",
    "HealthformsOutboxBacklog",
}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing in CI: apt-get install prometheus")
        pytest.skip("promtool not installed (Debian package `prometheus`); CI runs this")
    return found


def exported_names() -> set[str]:
    """Every series name the service and its jobs can export."""
    metrics = Metrics()
    metrics.watch_redis(lambda: (True, {}, {}))
    names: set[str] = set(JOB_METRICS)
    families: list[Metric] = list(metrics.registry.collect())
    for family in families:
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "gauge": ("",),
        }.get(family.type, ("",))
        names.update(family.name + suffix for suffix in suffixes)
    return names


def alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    tool = promtool()
    checked = subprocess.run(
        [tool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout
    tested = subprocess.run(
        [tool, "test", "rules", str(ALERTS_TEST)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ALERTS_TEST.parent,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_rules_cover_what_the_issue_asks_and_each_is_unit_tested() -> None:
    names = {str(rule["alert"]) for rule in alert_rules()}
    assert names >= REQUIRED_ALERTS
    tests = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == names, f"alerts without a firing unit test: {names - fired}"


def test_every_metric_the_rules_query_is_exported() -> None:
    known = exported_names()
    used = {m for rule in alert_rules() for m in METRIC_TOKEN.findall(str(rule["expr"]))}
    assert used, "the rules query no healthforms metric"
    assert used <= known, f"not exported by healthforms/metrics.py: {sorted(used - known)}"


def test_the_dashboard_parses_and_queries_only_exported_metrics() -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    known = exported_names()
    used = {m for expr in exprs for m in METRIC_TOKEN.findall(expr)}
    assert used <= known, f"not exported by healthforms/metrics.py: {sorted(used - known)}"
    # The new alert metrics are on the dashboard too.
    assert {
        "healthforms_redis_eviction_policy_safe",
        "healthforms_outbox_backlog_messages",
        "healthforms_audit_verify_ok",
    } <= used


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool checks them as recording rules (Grafana's variables replaced by what
    "All" selects)."""
    exprs = dashboard_exprs()
    tool = promtool()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {
                        "record": f"dashboard:query_{i}",
                        "expr": expr.replace("$job", ".*").replace("$instance", ".*"),
                    }
                    for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
