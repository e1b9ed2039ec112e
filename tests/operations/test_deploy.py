"""What ships in deploy/: the alert rules (promtool test rules) and the Grafana dashboard."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.operations.running import (
    PROMTOOL,
    Daemon,
    WebhookReceiver,
    get,
    paper_config,
    shift,
    wait_for,
)
from trueup.operations.metrics import metric_names

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "trueup.json"
METRIC = re.compile(r"\b(trueup_[a-z0-9_]+|up)\b")


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool is not installed (apt-get install -y prometheus; make test installs it)"
    return subprocess.run(  # noqa: S603 - the system's promtool
        [PROMTOOL, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=120
    )


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    checked = promtool("check", "rules", "trueup-rules.yml", cwd=DEPLOY / "prometheus")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "trueup-rules.test.yml", cwd=DEPLOY / "prometheus")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_the_rule_tests_cover_every_rule() -> None:
    rules = set(re.findall(r"- alert: (\w+)", (DEPLOY / "prometheus" / "trueup-rules.yml").read_text()))
    tested = set(
        re.findall(r"alertname: (\w+)", (DEPLOY / "prometheus" / "trueup-rules.test.yml").read_text())
    )
    assert rules == tested
    assert len(rules) == 7


def test_promtool_refuses_a_rule_test_that_expects_the_wrong_alert(tmp_path: Path) -> None:
    # The unit tests can fail: the same rules with a test expecting the naked-position alert
    # for an account that has none.
    (tmp_path / "trueup-rules.yml").write_text((DEPLOY / "prometheus" / "trueup-rules.yml").read_text())
    (tmp_path / "wrong.test.yml").write_text(
        """rule_files: [trueup-rules.yml]
tests:
  - interval: 1m
    input_series:
      - series: 'trueup_open_discrepancies{account="B",kind="NAKED_POSITION",severity="CRITICAL"}'
        values: "0 0"
    alert_rule_test:
      - eval_time: 1m
        alertname: TrueupNakedPosition
        exp_alerts:
          - exp_labels: {severity: critical, account: B, kind: NAKED_POSITION}
"""
    )
    assert promtool("test", "rules", "wrong.test.yml", cwd=tmp_path).returncode != 0


def panels() -> list[dict[str, object]]:
    model = json.loads(DASHBOARD.read_text())
    return model["panels"]


def test_the_dashboard_is_a_grafana_model() -> None:
    model = json.loads(DASHBOARD.read_text())
    assert {"uid", "title", "schemaVersion", "panels", "templating", "time"} <= model.keys()
    assert isinstance(model["schemaVersion"], int)
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    for panel in model["panels"]:
        assert {"id", "type", "title", "gridPos", "targets", "datasource"} <= panel.keys(), panel["title"]
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys()
        assert panel["type"] in {"stat", "timeseries", "table", "gauge", "bargauge"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"]
            assert target["expr"]
    titles = " ".join(p["title"].lower() for p in model["panels"])
    for wanted in (
        "gate state",
        "open discrepancies by kind",
        "mismatch rate",
        "p50 / p99",
        "last successful",
        "stream",
    ):
        assert wanted in titles


def test_every_panel_query_parses(tmp_path: Path) -> None:
    exprs = [t["expr"] for p in panels() for t in p["targets"]]  # type: ignore[attr-defined]
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "queries.yml").write_text(json.dumps(rules))  # JSON is YAML
    checked = promtool("check", "rules", "queries.yml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # the check is real: a broken query is refused
    (tmp_path / "broken.yml").write_text(
        json.dumps({"groups": [{"name": "b", "rules": [{"record": "b:x", "expr": "sum(rate(x[5m]"}]}]})
    )
    assert promtool("check", "rules", "broken.yml", cwd=tmp_path).returncode != 0


@pytest.fixture(scope="module")
def live_metrics(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    tmp = tmp_path_factory.mktemp("scrape")
    # A hosted sink, so the sink series exist too (they are labelled by configured sinks only).
    receiver = WebhookReceiver()
    sink = f'[sinks.webhook]\nurl = "{receiver.url}"\nsecret_env = "TRUEUP_SCRAPE_HOOK_SECRET"\n'
    daemon = Daemon(
        paper_config(tmp, period=0.5, startup_delay=0, extra=sink),
        env={"TRUEUP_SCRAPE_HOOK_SECRET": "scrape-secret"},
    )
    try:
        wait_for("/readyz 200", lambda: get(daemon.base + "/readyz")[0] == 200, timeout=30)
        shift(tmp, "AAPL", 3)  # an open discrepancy: its age series exists only while one is open
        wait_for(
            "a discrepancy in the scrape",
            lambda: "trueup_open_discrepancy_oldest_timestamp_seconds{" in daemon.metrics(),
            timeout=30,
        )
        wait_for("the webhook sink to deliver", lambda: receiver.received, timeout=30)
        names = metric_names(daemon.metrics())
        assert daemon.terminate(timeout=30) == 0
    finally:
        daemon.kill()
        receiver.close()
    return names


def test_dashboard_and_rules_name_only_metrics_the_daemon_exposes(live_metrics: set[str]) -> None:
    used = {m for p in panels() for t in p["targets"] for m in METRIC.findall(t["expr"])}  # type: ignore[attr-defined]
    rules = (DEPLOY / "prometheus" / "trueup-rules.yml").read_text()
    exprs = " ".join(re.findall(r"expr: (?:>-\n)?((?:.+\n)+?)\s+labels:", rules))
    used |= set(METRIC.findall(exprs))
    used.discard("up")  # Prometheus's own per-target series
    assert used, "no metric found in the queries"
    assert used <= live_metrics, sorted(used - live_metrics)


def test_the_live_scrape_has_every_documented_metric(live_metrics: set[str]) -> None:
    documented = set(re.findall(r"`(trueup_[a-z0-9_]+)`", (ROOT / "docs" / "operations.md").read_text()))
    exposed = {re.sub(r"_(bucket|count|sum)$", "", n) for n in live_metrics}
    assert documented
    assert documented <= exposed | live_metrics, sorted(documented - exposed - live_metrics)
    assert {n for n in exposed if n.startswith("trueup_")} <= documented, sorted(
        n for n in exposed if n.startswith("trueup_") and n not in documented
    )
