"""The `trueup` command, run in-process through typer's runner on a real SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.builders import ACCOUNT, D, fill_report, order_report
from trueup import Ledger
from trueup.cli import EXIT_CRITICAL, app

runner = CliRunner()


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'books.db'}"
    with Ledger.open(url) as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
        ledger.ingest([order_report("ACCEPTED", ts=1), fill_report("E1", 4, 100, ts=2)])
    return url


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout


def test_read_commands_print_json(store: str) -> None:
    code, out = run("orders", "--store", store, "--json")
    assert code == 0
    [order] = json.loads(out)
    assert (order["client_order_id"], order["status"], order["filled_qty"]) == ("C1", "PARTIALLY_FILLED", "4")
    code, out = run("positions", "--store", store, "--json")
    assert json.loads(out)[0]["qty"] == "4"
    code, out = run("discrepancies", "--store", store, "--json")
    assert (code, json.loads(out)) == (0, [])
    code, out = run("status", "--store", store, "--json")
    status = json.loads(out)
    assert status["accounts"][ACCOUNT]["open_orders"] == 1
    assert status["critical_open"] == 0


def test_a_critical_discrepancy_makes_every_read_command_fail(store: str) -> None:
    with Ledger.open(store) as ledger:
        ledger.ingest(fill_report("E2", 99, 100, ts=3))  # overfill: CRITICAL
    for command in ("status", "orders", "positions", "discrepancies"):
        code, _ = run(command, "--store", store, "--json")
        assert code == EXIT_CRITICAL, command
    # Every command that reads a store says so (issue 16), the log and the past too: the
    # output is complete, the exit status tells the open alarm.
    for command in (("events",), ("replay", "--until", "1"), ("rebuild",)):
        code, _ = run(*command, "--store", store)
        assert code == EXIT_CRITICAL, command


def test_replay_shows_the_books_as_of_a_position(store: str) -> None:
    with Ledger.open(store) as ledger:
        before_fill = next(e.position for e in ledger.events() if e.topic == "trueup:Order.FillBooked") - 1
    code, out = run("replay", "--store", store, "--until", str(before_fill), "--json")
    assert code == 0
    state = json.loads(out)
    assert state["orders"][0]["filled_qty"] == "0"
    assert state["positions"] == []
    code, out = run("replay", "--store", store, "--until", "2000-01-01T00:00:00+00:00", "--json")
    assert json.loads(out)["orders"] == []


def test_rebuild_keeps_the_same_books(store: str) -> None:
    _, before = run("orders", "--store", store, "--json")
    code, _ = run("rebuild", "--store", store)
    assert code == 0
    assert run("orders", "--store", store, "--json")[1] == before


def test_events_resume_after_a_consumers_saved_position(store: str) -> None:
    code, out = run("events", "--store", store, "--consumer", "alerts", "--json")
    first = [json.loads(line)["position"] for line in out.splitlines()]
    assert code == 0
    assert first == sorted(first)
    assert first
    assert run("events", "--store", store, "--consumer", "alerts", "--json")[1] == ""
    with Ledger.open(store) as ledger:
        ledger.ingest(fill_report("E3", 1, 100, ts=4))
    _, out = run("events", "--store", store, "--consumer", "alerts", "--json")
    new = [json.loads(line) for line in out.splitlines()]
    assert new
    assert min(e["position"] for e in new) == max(first) + 1


def test_reconcile_against_the_paper_broker(tmp_path: Path) -> None:
    import asyncio

    from trueup.adapters.paper.broker import PaperBroker

    paper = tmp_path / "paper.db"
    with PaperBroker(paper, account="PAPER", seed=5) as broker:
        broker.manual_order("MSFT", "BUY", D(3))  # type: ignore[arg-type]
        for _ in range(3):
            broker.step()
        asyncio.run(broker.snapshot("PAPER"))
    store = f"sqlite:///{tmp_path / 'books.db'}"
    code, out = run(
        "reconcile", "--store", store, "--paper-state", str(paper), "--account", "PAPER", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert "ORPHAN_ORDER" in {d["kind"] for d in result["discrepancies"]}
    assert result["events_stored"] > 0


def test_demo_runs_and_reports_equal_books(tmp_path: Path) -> None:
    code, out = run(
        "demo",
        "--workdir",
        str(tmp_path / "demo"),
        "--orders",
        "15",
    )
    assert code == 0, out
    assert "books equal the broker" in out
    assert "crash (SIGKILL)" in out


def test_orders_all_lists_closed_orders_too(store: str) -> None:
    with Ledger.open(store) as ledger:
        ledger.ingest(fill_report("E9", 6, 100, ts=5))  # fills the order: closed
    assert json.loads(run("orders", "--store", store, "--json")[1]) == []
    [order] = json.loads(run("orders", "--store", store, "--all", "--json")[1])
    assert (order["client_order_id"], order["status"]) == ("C1", "FILLED")
