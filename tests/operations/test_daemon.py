"""`trueup run` end to end: the paper broker with faults, the endpoint, metrics, a real Prometheus."""

from __future__ import annotations

import json
import subprocess
import sys
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


TRUEUP = str(Path(sys.executable).with_name("trueup"))


def _trueup(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed `trueup` command."""
    return subprocess.run(  # noqa: S603 - the installed command
        [TRUEUP, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=60
    )


def test_an_operator_resolving_the_discrepancy_brings_the_gauge_back_to_0_while_it_runs(
    tmp_path: Path,
) -> None:
    # The broker keeps the shifted position: only the operator's resolution closes it.
    config = paper_config(
        tmp_path,
        startup_delay=0,
        extra='\n[operators.alice]\npermissions = ["manage_reconciliation"]\n',
    )
    daemon = Daemon(config)
    store = f"sqlite:///{tmp_path / 'trueup.db'}"
    try:
        wait_for("/readyz 200", lambda: get(daemon.base + "/readyz")[0] == 200, timeout=30)
        shift(tmp_path, "AAPL", 10)
        wait_for(
            "the open-discrepancies gauge at 1",
            lambda: sample(daemon.metrics(), "trueup_open_discrepancies", **MISMATCH) == 1,
            timeout=30,
        )
        listed = _trueup("discrepancies", "--store", store, "--json", cwd=tmp_path)
        assert listed.returncode == 0, listed.stderr
        (found,) = [d for d in json.loads(listed.stdout) if d["kind"] == "MISSING_LOCAL_POSITION"]
        refused = _trueup(
            "resolve",
            found["id"],
            "--reason",
            "x",
            "--operator",
            "mallory",
            "--config",
            str(config),
            cwd=tmp_path,
        )
        assert refused.returncode == 1  # no permission in [operators]: nothing stored
        assert sample(daemon.metrics(), "trueup_open_discrepancies", **MISMATCH) == 1
        resolved = _trueup(
            "resolve",
            found["id"],
            "--reason",
            "checked at the broker: a transfer in, booked upstream",
            "--operator",
            "alice",
            "--config",
            str(config),
            cwd=tmp_path,
        )
        assert resolved.returncode == 0, resolved.stderr
        wait_for(
            "the gauge back at 0",
            lambda: sample(daemon.metrics(), "trueup_open_discrepancies", **MISMATCH) == 0,
            timeout=30,
        )
        # Acknowledged: later cycles see the same (unchanged) position and raise nothing again.
        raised = sample(daemon.metrics(), "trueup_reconciliation_mismatches_total", **MISMATCH)

        def cycles() -> float:
            labels = {"account": "PAPER", "trigger": "periodic", "outcome": "ok"}
            return sample(daemon.metrics(), "trueup_reconciliation_cycles_total", **labels) or 0

        seen = cycles()
        wait_for("three more periodic cycles", lambda: cycles() >= seen + 3, timeout=30)
        metrics = daemon.metrics()
        assert sample(metrics, "trueup_open_discrepancies", **MISMATCH) == 0
        assert sample(metrics, "trueup_reconciliation_mismatches_total", **MISMATCH) == raised == 1
        history = _trueup("history", found["id"], "--store", store, cwd=tmp_path)
        assert history.returncode == 0, history.stderr
        assert "alice" in history.stdout
        assert "checked at the broker" in history.stdout
        assert daemon.terminate(timeout=30) == 0
    finally:
        daemon.kill()
