"""What the monitoring files promise, read as files (no service): every metric the worker exports is on a
dashboard, a panel titled "a / b" shows both, every alert has a severity and a unit test, and the data of
Prometheus, Alertmanager and Grafana live in volumes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.deploy import DEPLOY
from worker.metrics import Metrics

DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _panels() -> list[dict[str, Any]]:
    return [panel for dashboard in DASHBOARDS for panel in json.loads(dashboard.read_text())["panels"]]


def test_every_metric_the_worker_exports_is_on_a_panel() -> None:
    metrics = Metrics()
    metrics.head("0", 1)  # the per-endpoint series appear with the first block seen
    families = {family.name for family in metrics.registry.collect()}
    shown = " ".join(target["expr"] for panel in _panels() for target in panel["targets"])
    absent = {family for family in families if not re.search(rf"\b{family}(_total|_bucket|_info)?\b", shown)}
    assert not absent, f"exported metrics on no dashboard panel: {sorted(absent)}"


def test_a_panel_titled_a_over_b_shows_both() -> None:
    for panel in _panels():
        if "/" in panel["title"]:
            exprs = [target["expr"] for target in panel["targets"]]
            assert len(exprs) >= 2, f"panel {panel['title']!r} shows only {exprs}"


def test_every_alert_has_a_severity_and_a_unit_test() -> None:
    rules = [
        rule for group in _load(DEPLOY / "prometheus" / "alerts.yml")["groups"] for rule in group["rules"]
    ]
    tested = {
        check["alertname"]
        for case in _load(DEPLOY / "prometheus" / "alerts.test.yml")["tests"]
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    for rule in rules:
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule["alert"]
        assert rule["alert"] in tested, f"{rule['alert']} fires in no case of alerts.test.yml"


def test_prometheus_finds_its_rules_beside_its_configuration_and_sends_alerts() -> None:
    config = _load(DEPLOY / "prometheus" / "prometheus.yml")
    assert all(not Path(path).is_absolute() for path in config["rule_files"])
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]


def test_prometheus_alertmanager_and_grafana_keep_their_data_in_volumes() -> None:
    compose = _load(DEPLOY / "compose.yml")
    for service, folder in (
        ("prometheus", "/prometheus"),
        ("alertmanager", "/alertmanager"),
        ("grafana", "/var/lib/grafana"),
    ):
        volumes = [volume.split(":") for volume in compose["services"][service]["volumes"]]
        named = [name for name, target, *_ in volumes if target == folder]
        assert named, f"{service} keeps {folder} in no volume"
        assert named[0] in compose["volumes"], f"{service} keeps {folder} in {named[0]}, not a named volume"
