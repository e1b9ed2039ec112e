"""`trueup run` end to end: the paper broker with faults, the endpoint, metrics, a real Prometheus."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.operations.running import Daemon, Prometheus, get, paper_config, sample, shift, wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "trueup-rules.yml"
MISMATCH = {"account": "PAPER", "kind": "MISSING_LOCAL_POSITION", "severity": "ERROR"}


def _must_show(tmp_path: Path, *, seconds: float) -> None:
    """Startup gating, a shifted position seen and resolved, a clean SIGTERM; for `seconds` in all."""
    started = time.monotonic()
    period = 0.5
    daemon = Daemon(paper_config(tmp_path, period=period, startup_delay=1.5))
    try:
        # startup: RECONCILING until the first reconciliation, then READY
        status, body = get(daemon.base + "/readyz")
        assert status == 503, body
        assert "startup reconciliation not finished" in body
        assert get(daemon.base + "/v1/gate/PAPER")[0] == 503
        assert get(daemon.base + "/healthz")[0] == 200
        wait_for("/readyz 200", lambda: get(daemon.base + "/readyz")[0] == 200, timeout=30)
        gate_status, gate = get(daemon.base + "/v1/gate/paper")  # by config name too
        assert gate_status == 200
        assert json.loads(gate)["gate"] == "READY"
        assert get(daemon.base + "/v1/gate/NOPE")[0] == 404
        before = sample(daemon.metrics(), "trueup_reconciliation_mismatches_total", **MISMATCH)
        assert before == 0
        rounds = 0
        while True:
            rounds += 1
            shift(tmp_path, "AAPL", 10)
            wanted = rounds
            wait_for(
                "the mismatch counter to move",
                lambda: (
                    (sample(daemon.metrics(), "trueup_reconciliation_mismatches_total", **MISMATCH) or 0)
                    >= wanted  # noqa: B023 - called before the loop moves on
                ),
                timeout=30,
            )
            wait_for(
                "the open-discrepancies gauge at 1",
                lambda: sample(daemon.metrics(), "trueup_open_discrepancies", **MISMATCH) == 1,
                timeout=30,
            )
            report = json.loads(get(daemon.base + "/v1/status")[1])
            assert report["accounts"]["PAPER"]["open_discrepancies"] == {
                "MISSING_LOCAL_POSITION": {"ERROR": 1}
            }
            shift(tmp_path, "AAPL", -10)
            wait_for(
                "the gauge back at 0",
                lambda: sample(daemon.metrics(), "trueup_open_discrepancies", **MISMATCH) == 0,
                timeout=30,
            )
            if time.monotonic() - started > seconds - 5:
                break
            time.sleep(min(2.0, max(0.0, seconds - 5 - (time.monotonic() - started))))
        metrics = daemon.metrics()
        assert (
            sample(
                metrics,
                "trueup_reconciliation_cycles_total",
                account="PAPER",
                trigger="periodic",
                outcome="ok",
            )
            or 0
        ) > 0
        assert sample(metrics, "trueup_gate_state", account="PAPER", state="READY") == 1
        # SIGTERM: the current cycle finishes, counters are saved, exit 0 (bounded, generously)
        assert daemon.terminate(timeout=period + 20) == 0
    finally:
        daemon.kill()
    lines = [json.loads(line) for line in daemon.lines]  # one JSON object per line, every line
    assert any(line["message"] == "SIGTERM received" for line in lines)
    assert lines[-1]["message"] == "stopped"
    assert not any(line["level"] in {"ERROR", "CRITICAL"} for line in lines), [
        line for line in lines if line["level"] in {"ERROR", "CRITICAL"}
    ]
    from trueup import Ledger

    with Ledger.open(f"sqlite:///{tmp_path / 'trueup.db'}") as ledger:
        saved = ledger.service_status()["reconciliation:paper"]
        assert saved["cycles"] > 0
        assert saved["discrepancies_by_kind"]["MISSING_LOCAL_POSITION"] == rounds


def test_trueup_run_gates_startup_sees_a_shifted_position_and_stops_cleanly(tmp_path: Path) -> None:
    _must_show(tmp_path, seconds=0)


@pytest.mark.soak
def test_trueup_run_for_60_seconds_against_the_faulty_paper_broker(tmp_path: Path) -> None:
    _must_show(tmp_path, seconds=60)


def test_a_real_prometheus_scrapes_trueup_run_and_the_alert_expression_turns_true(tmp_path: Path) -> None:
    daemon = Daemon(paper_config(tmp_path, period=0.5, startup_delay=0))
    prometheus = None
    try:
        wait_for("/readyz 200", lambda: get(daemon.base + "/readyz")[0] == 200, timeout=30)
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{daemon.port}", RULES)
        ready = wait_for(
            "a scrape with the gate READY",
            lambda: prometheus.query('trueup_gate_state{account="PAPER",state="READY"} == 1'),
            timeout=60,
        )
        assert ready[0]["metric"]["job"] == "trueup"
        assert prometheus.query('up{job="trueup"}')[0]["value"][1] == "1"
        shifted = time.monotonic()
        shift(tmp_path, "AAPL", 5)
        counted = wait_for(
            "the mismatch counter in Prometheus",
            lambda: prometheus.query(
                'trueup_reconciliation_mismatches_total{account="PAPER",kind="MISSING_LOCAL_POSITION"} > 0'
            ),
            timeout=60,
        )
        assert counted[0]["value"][1] == "1"
        firing = wait_for(
            "the TrueupPositionMismatch rule",
            lambda: prometheus.query('ALERTS{alertname="TrueupPositionMismatch",account="PAPER"}'),
            timeout=60,
        )
        print(f"shift -> alert expression true (ALERTS present): {time.monotonic() - shifted:.1f}s")
        assert firing[0]["metric"]["kind"] == "MISSING_LOCAL_POSITION"
        shift(tmp_path, "AAPL", -5)
        wait_for(
            "the gauge at 0 in Prometheus",
            lambda: prometheus.query(
                'trueup_open_discrepancies{account="PAPER",kind="MISSING_LOCAL_POSITION"} == 0'
            ),
            timeout=60,
        )
        assert daemon.terminate(timeout=30) == 0
    finally:
        if prometheus is not None:
            prometheus.stop()
        daemon.kill()
