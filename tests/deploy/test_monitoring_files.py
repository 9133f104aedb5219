"""deploy/prometheus and deploy/grafana: they parse, use only metrics shared/metrics.py
exports (with the right suffix for the type), and every alert has a runbook entry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared import metrics
from tests.support.services import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
REQUIRED_ALERTS = {  # the list, by name
    "WapairNoWorkerAlive", "WapairPairedTenantsNotConnected", "WapairLeaseRenewFailures",
    "WapairDeviceRemoved", "WapairPairingSuccessRateLow", "WapairClientOutdated",
}


def sample_names() -> set[str]:
    """Every series name a query may use: counters end _total, histograms _bucket/_sum/_count."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            base, kind = value._name, value._type
            names |= {
                "counter": {f"{base}_total"},
                "histogram": {f"{base}_bucket", f"{base}_sum", f"{base}_count"},
                "gauge": {base},
            }[kind]
    scraped = {metrics.WORKERS_ALIVE, metrics.TENANTS, metrics.PAIRED_NOT_CONNECTED,
               metrics.MAILBOX_COMMANDS, metrics.MAILBOX_DEPTH_TOP,
               metrics.CLAIMS_QUEUE_LENGTH, metrics.REDIS_UP}
    return names | scraped


def used_metrics(expr: str) -> set[str]:
    return set(re.findall(r"\b(wapair_[a-z0-9_]+)", expr))


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_alert_rules(rules: list[dict[str, Any]]) -> None:
    known = sample_names()
    runbook = anchors((ROOT / "docs" / "operations.md").read_text())
    assert REQUIRED_ALERTS <= {r["alert"] for r in rules}
    for rule in rules:
        used = used_metrics(rule["expr"])
        assert used and used <= known, (rule["alert"], used - known)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/operations.md" and anchor in runbook, rule["alert"]


def test_scrape_config_loads_the_rules() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["wapair-api"]["authorization"]["type"] == "Bearer"
    assert {"wapair-api", "wapair-worker", "wapair-flower"} <= set(jobs)


def test_grafana_dashboard() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "wapair.json").read_text())
    known = sample_names()
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    shown = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            used = used_metrics(target["expr"])
            assert used and used <= known, (panel["title"], used - known)
            shown |= used
    # Every metric wapair exports is on the dashboard somewhere.
    bases = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in shown}
    assert metrics.METRIC_NAMES <= bases, metrics.METRIC_NAMES - bases


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_checks_and_unit_tests_the_rules() -> None:
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"],
                 ["check", "config", "--syntax-only", "prometheus.yml"]):
        result = subprocess.run(["promtool", *args], cwd=PROMETHEUS, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
