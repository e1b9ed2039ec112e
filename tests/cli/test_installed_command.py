"""The installed `trueup` command (a subprocess of the venv's console script), as an operator runs it.

Each test is one rule of "a command line that never misleads" or of the audited operator
commands: exit codes, one-line errors, JSON on stdout only, read commands that create
nothing, the demo that never touches a real store, and who did what in the log.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.builders import ACCOUNT, D, fill_report, order_report
from trueup import Ledger

TRUEUP = shutil.which("trueup", path=str(Path(sys.executable).parent))

CONFIG = """\
store = "sqlite:///books.db"
[accounts.paper]
broker = "paper"
account_id = "PAPER"
[operators.alice]
permissions = ["manage_reconciliation"]
[operators.bob]
permissions = []
"""


def trueup(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert TRUEUP is not None, "the trueup console script is not installed"
    environment = {k: v for k, v in os.environ.items() if k not in {"TRUEUP_STORE", "TRUEUP_CONFIG"}}
    environment.update(env or {})
    environment["COLUMNS"] = "80"
    return subprocess.run(  # noqa: S603 - our own console script
        [TRUEUP, *args], capture_output=True, text=True, check=False, cwd=cwd, env=environment, timeout=120
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert lines[0].startswith("trueup: error: ")
    return lines[0]


@pytest.fixture
def books(tmp_path: Path) -> Path:
    """A store with a LOST order (CRITICAL, its symbol locked) and a filled one; the config."""
    with Ledger.open(f"sqlite:///{tmp_path / 'books.db'}") as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
        ledger.ingest([order_report("ACCEPTED", ts=1), fill_report("E1", 4, "100.123456789", ts=2)])
        ledger.intend(ACCOUNT, "L1", "TSLA", "BUY", D(3))
        ledger.mark_submitted(ACCOUNT, "L1")
        ledger.declare_lost(ACCOUNT, "L1", not_found=3, failed=0)
    (tmp_path / "trueup.toml").write_text(CONFIG)
    return tmp_path


def lost_id(books: Path) -> str:
    listed = json.loads(trueup("discrepancies", "--store", "sqlite:///books.db", "--json", cwd=books).stdout)
    [lost] = [d for d in listed if d["kind"] == "LOST"]
    return str(lost["id"])


@pytest.mark.parametrize(
    "command",
    [
        ["orders"],
        ["positions"],
        ["discrepancies"],
        ["status"],
        ["events"],
        ["replay", "--until", "1"],
        ["rebuild"],
    ],
)
def test_every_command_that_reads_a_store_exits_2_while_a_critical_is_open(
    books: Path, command: list[str]
) -> None:
    done = trueup(*command, "--store", "sqlite:///books.db", cwd=books)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "CRITICAL" in done.stderr


@pytest.mark.parametrize("command", [["orders"], ["positions"], ["discrepancies"], ["status"], ["events"]])
def test_json_is_valid_on_stdout_and_notes_go_to_stderr(books: Path, command: list[str]) -> None:
    done = trueup(*command, "--store", "sqlite:///books.db", "--json", cwd=books)
    if command == ["events"]:
        assert all(json.loads(line) for line in done.stdout.splitlines())
    else:
        json.loads(done.stdout)
    assert "discrepancy(ies) open" not in done.stdout
    assert "discrepancy(ies) open" in done.stderr


@pytest.mark.parametrize("store", ["sqlite:///typo.db", "typo.db", "sqlite://rel.db"])
@pytest.mark.parametrize("command", ["status", "orders", "events", "discrepancies"])
def test_read_commands_never_create_a_store(tmp_path: Path, store: str, command: str) -> None:
    line = one_line_error(trueup(command, "--store", store, cwd=tmp_path))
    assert "typo.db" in line or "sqlite:///rel.db" in line
    assert list(tmp_path.iterdir()) == []  # no file, no directory named "sqlite:"


def test_the_default_store_missing_is_an_error_too(tmp_path: Path) -> None:
    line = one_line_error(trueup("status", cwd=tmp_path))
    assert "trueup.db" in line
    assert list(tmp_path.iterdir()) == []


def test_reconcile_without_a_paper_state_file_invents_no_broker(tmp_path: Path) -> None:
    line = one_line_error(trueup("reconcile", "--store", "sqlite:///b.db", cwd=tmp_path))
    assert "paper.db" in line
    assert not (tmp_path / "paper.db").exists()
    assert not (tmp_path / "b.db").exists()


@pytest.mark.parametrize(
    "content", [b"not a database at all, just text\n" * 10, b"SQLite format 3\x00" + b"\x00" * 50]
)
def test_a_store_that_is_not_sqlite_or_is_truncated_is_one_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "bad.db").write_bytes(content)
    line = one_line_error(trueup("status", "--store", "sqlite:///bad.db", cwd=tmp_path))
    assert "bad.db" in line
    assert "SQLite" in line


def test_corrupt_store_raises_store_error_in_the_library(tmp_path: Path) -> None:
    from trueup import ConfigError, StoreError

    good = tmp_path / "good.db"
    with Ledger.open(f"sqlite:///{good}") as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(1))
    data = good.read_bytes()
    (tmp_path / "cut.db").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.db").write_text("hello")
    for name in ("cut.db", "text.db"):
        with pytest.raises(StoreError):
            Ledger.open(f"sqlite:///{tmp_path / name}").close()
    with pytest.raises(ConfigError, match="two slashes"):
        Ledger.open("sqlite://rel.db")


def test_usage_errors_exit_1_in_one_line(tmp_path: Path) -> None:
    one_line_error(trueup("orders", "--bogus", cwd=tmp_path))
    one_line_error(trueup("no-such-command", cwd=tmp_path))
    one_line_error(trueup("events", "--until", "yesterday", "--store", "x.db", cwd=tmp_path))


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = trueup("--debug", "status", "--store", "sqlite:///typo.db", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" in done.stderr


def test_version_and_store_help_show_the_default(tmp_path: Path) -> None:
    done = trueup("--version", cwd=tmp_path)
    assert done.returncode == 0
    assert done.stdout.startswith("trueup ")
    helped = trueup("status", "--help", cwd=tmp_path)
    assert "sqlite:///trueup.db" in helped.stdout


def test_tables_fit_80_columns_and_figures_are_quantized(books: Path) -> None:
    for command in ("orders", "positions", "discrepancies", "status"):
        done = trueup(command, "--store", "sqlite:///books.db", cwd=books)
        widths = [len(line) for line in done.stdout.splitlines()]
        assert max(widths) <= 80, (command, done.stdout)
    positions = trueup("positions", "--store", "sqlite:///books.db", cwd=books).stdout
    assert "100.1235" in positions  # avg cost to 4 places, not 100.123456789
    assert "100.123456789" not in positions
    wide = trueup("discrepancies", "--store", "sqlite:///books.db", "--wide", cwd=books).stdout
    assert "SUBMITTED order known to the broker" in wide  # the expected column, only with --wide
    exact = json.loads(trueup("positions", "--store", "sqlite:///books.db", "--json", cwd=books).stdout)
    assert Decimal(exact[0]["avg_cost"]) == Decimal("100.123456789")


def test_events_filter_and_name_their_subject_without_reprs(books: Path) -> None:
    store = ["--store", "sqlite:///books.db"]
    lines = trueup("events", *store, cwd=books).stdout.splitlines()
    assert lines
    about = [line for line in lines if "BrokerMessage" not in line]  # raw payloads, stored verbatim
    named = ("order ", "position ", "gate", "LOST L1")
    assert all(any(name in line for name in named) for line in about), about
    assert not any("{'" in line or "frozenset(" in line or "Decimal(" in line for line in lines)
    only = trueup("events", *store, "--order", "L1", cwd=books).stdout.splitlines()
    assert only
    assert all("L1" in line for line in only), only
    raised = trueup("events", *store, "--topic", "Discrepancy", "--json", cwd=books).stdout.splitlines()
    assert [json.loads(line)["topic"] for line in raised] == ["trueup:Discrepancy.Raised"]
    assert trueup("events", *store, "--account", "NOPE", cwd=books).stdout == ""
    first = trueup("events", *store, "--until", "2", "--json", cwd=books).stdout.splitlines()
    assert [json.loads(line)["position"] for line in first] == [1, 2]
    # a consumer resumes where it stopped: --until stops it, the next run goes on
    part = trueup("events", *store, "--consumer", "pager", "--until", "3", "--json", cwd=books)
    rest = trueup("events", *store, "--consumer", "pager", "--json", cwd=books)
    seen = [json.loads(line)["position"] for line in part.stdout.splitlines() + rest.stdout.splitlines()]
    assert seen == sorted(set(seen))
    assert seen[:3] == [1, 2, 3]
    assert len(seen) == len(trueup("events", *store, "--json", cwd=books).stdout.splitlines())


def test_status_prints_no_python_reprs(books: Path) -> None:
    out = trueup("status", "--store", "sqlite:///books.db", "--wide", cwd=books).stdout
    assert "{'" not in out
    assert "LOST 1" in out


def test_orders_limit_and_since(books: Path) -> None:
    store = ["--store", "sqlite:///books.db", "--all", "--json"]
    assert len(json.loads(trueup("orders", *store, cwd=books).stdout)) == 2
    assert len(json.loads(trueup("orders", *store, "--limit", "1", cwd=books).stdout)) == 1
    future = trueup("orders", *store, "--since", "2999-01-01T00:00:00+00:00", cwd=books)
    assert json.loads(future.stdout) == []
    one_line_error(trueup("orders", *store, "--since", "2999-01-01", cwd=books))


def test_demo_ignores_trueup_store_and_cleans_up(tmp_path: Path) -> None:
    real = tmp_path / "real.db"
    with Ledger.open(f"sqlite:///{real}") as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(1))
    before = real.read_bytes()
    temp = tmp_path / "tmp"
    temp.mkdir()
    done = trueup(
        "demo", "--orders", "8", cwd=tmp_path, env={"TRUEUP_STORE": f"sqlite:///{real}", "TMPDIR": str(temp)}
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert real.read_bytes() == before
    assert list(temp.iterdir()) == []  # its own directory, removed
    kept = trueup("demo", "--orders", "8", "--keep", cwd=tmp_path, env={"TMPDIR": str(temp)})
    assert kept.returncode == 0
    [left] = list(temp.iterdir())
    assert (left / "trueup.db").is_file()
    used = tmp_path / "used"
    used.mkdir()
    (used / "trueup.db").write_bytes(before)
    one_line_error(trueup("demo", "--workdir", str(used), cwd=tmp_path))
    assert (used / "trueup.db").read_bytes() == before


def test_operator_commands_need_the_permission_and_are_audited(books: Path) -> None:
    ident = lost_id(books)
    store = ["--store", "sqlite:///books.db"]
    refused = one_line_error(
        trueup("abandon", ACCOUNT, "L1", "--reason", "gone", "--operator", "bob", cwd=books)
    )
    assert "manage_reconciliation" in refused
    one_line_error(trueup("override", ACCOUNT, "--reason", "x", "--operator", "mallory", cwd=books))
    (books / "elsewhere").mkdir()  # no trueup.toml there: no permissions at all
    one_line_error(
        trueup("abandon", ACCOUNT, "L1", "--reason", "gone", "--operator", "alice", cwd=books / "elsewhere")
    )
    assert lost_id(books) == ident  # nothing changed by a refused command
    done = trueup(
        "abandon", ACCOUNT, "L1", "--reason", "not in TWS, checked 09:12", "--operator", "alice", cwd=books
    )
    assert done.returncode == 0, done.stderr
    status = json.loads(trueup("status", *store, "--json", cwd=books).stdout)
    assert status["accounts"][ACCOUNT]["locked_symbols"] == {}
    assert status["critical_open"] == 0
    history = trueup("history", ident[:8], *store, cwd=books).stdout
    assert "alice" in history
    assert "not in TWS, checked 09:12" in history
    assert "OperatorLog.Acted" in history
    acted = trueup("events", *store, "--topic", "OperatorLog.Acted", "--json", cwd=books).stdout.splitlines()
    assert [(e["command"], e["operator"], e["subject"]) for e in map(json.loads, acted)] == [
        ("abandon", "alice", "L1")
    ]
    again = one_line_error(trueup("resolve", ident, "--reason", "x", "--operator", "alice", cwd=books))
    assert "already resolved" in again


def test_each_operator_command_is_recorded_with_who_and_why(books: Path) -> None:
    store = ["--store", "sqlite:///books.db"]
    ident = lost_id(books)
    steps = [
        ("resolve", ident, "--reason", "found at TWS, filled"),
        ("unlock", ACCOUNT, "TSLA", "--reason", "TWS checked"),
        ("claim", ACCOUNT, "momo", "TSLA", "--reason", "momo trades it by hand"),
        ("override", ACCOUNT, "--reason", "desk ok'd the open"),
    ]
    for step in steps:
        done = trueup(*step, "--operator", "alice", "--json", cwd=books)
        assert done.returncode == 0, (step, done.stderr)
        json.loads(done.stdout)
    acted = [
        json.loads(line)
        for line in trueup("events", *store, "--topic", "Acted", "--json", cwd=books).stdout.splitlines()
    ]
    assert [(a["command"], a["operator"], a["reason"]) for a in acted] == [
        ("resolve", "alice", "found at TWS, filled"),
        ("unlock", "alice", "TWS checked"),
        ("claim", "alice", "momo trades it by hand"),
        ("override", "alice", "desk ok'd the open"),
    ]
    assert (
        json.loads(trueup("status", *store, "--json", cwd=books).stdout)["accounts"][ACCOUNT]["gate"]
        == "READY"
    )
    one_line_error(trueup("unlock", ACCOUNT, "TSLA", "--operator", "alice", cwd=books))  # not locked now


def test_the_default_operator_is_the_os_user(books: Path) -> None:
    user = "carol"
    (books / "trueup.toml").write_text(
        CONFIG + f'[operators.{user}]\npermissions = ["manage_reconciliation"]\n'
    )
    done = trueup("override", ACCOUNT, "--reason", "r", cwd=books, env={"USER": user, "LOGNAME": user})
    assert done.returncode == 2, done.stderr  # done; the LOST is still open (CRITICAL)
    assert "overridden by carol" in done.stdout
    [acted] = trueup(
        "events", "--store", "sqlite:///books.db", "--topic", "Acted", "--json", cwd=books
    ).stdout.splitlines()
    assert json.loads(acted)["operator"] == user


def test_reconcile_exits_3_when_the_broker_cannot_be_asked(tmp_path: Path) -> None:
    done = trueup(
        "reconcile",
        "--broker",
        "alpaca",
        "--account",
        "A1",
        "--store",
        "sqlite:///b.db",
        cwd=tmp_path,
        env={"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s", "APCA_API_BASE_URL": "http://127.0.0.1:9"},
    )
    assert done.returncode == 3, (done.stdout, done.stderr)


def test_intend_validates_like_submit(tmp_path: Path) -> None:
    from trueup import InvalidReport

    with Ledger.open(f"sqlite:///{tmp_path / 'b.db'}") as ledger:
        for cid, symbol, side in [
            ("", "AAPL", "BUY"),
            ("has space", "AAPL", "BUY"),
            ("C1", "", "BUY"),
            ("C1", "AAPL\n", "BUY"),
            ("C1", "X" * 200, "BUY"),
            ("C1", "'; DROP TABLE", "BUY"),
            ("C1", "AAPL", "buy"),
            ("C1", "AAPL", "LONG"),
        ]:
            with pytest.raises(InvalidReport):
                ledger.intend(ACCOUNT, cid, symbol, side, Decimal(1))
        assert ledger.all_orders() == []
        for symbol in ("BRK B", "BTC/USD", "NSE:M&M", "NSE:SBIN:CNC", "BAJAJ-AUTO", "ES=F"):
            ledger.intend(ACCOUNT, f"S{abs(hash(symbol)) % 10**6}", symbol, "SELL", Decimal(1))


def test_a_zero_price_fill_is_booked_with_a_discrepancy(tmp_path: Path) -> None:
    with Ledger.open(f"sqlite:///{tmp_path / 'b.db'}") as ledger:
        ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(10))
        ledger.ingest([order_report("ACCEPTED", ts=1)])
        ledger.ingest([fill_report("E1", 1, 0, ts=3)])
        found = {(d.kind, d.expected, d.actual) for d in ledger.discrepancies(ACCOUNT)}
        assert ("FILL_MISMATCH", "a fill price", "execution E1 at price 0") in found
        view = ledger.order(ACCOUNT, "C1")
        assert view is not None
        assert view.filled_qty == 1  # booked, and said so


def test_sqlite_header_check_leaves_new_and_empty_files_alone(tmp_path: Path) -> None:
    (tmp_path / "empty.db").write_bytes(b"")
    with Ledger.open(f"sqlite:///{tmp_path / 'empty.db'}") as ledger:
        assert ledger.last_position() == 0
    assert sqlite3.connect(tmp_path / "empty.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_postgres_says_unreachable_or_database_missing(tmp_path: Path) -> None:
    missing = one_line_error(
        trueup("status", "--store", "postgresql://postgres@127.0.0.1:5432/trueup_no_such_db", cwd=tmp_path)
    )
    assert "is up but database 'trueup_no_such_db' does not exist" in missing
    refused = one_line_error(trueup("status", "--store", "postgresql://postgres@127.0.0.1:9/x", cwd=tmp_path))
    assert "127.0.0.1:9 is unreachable" in refused


PG = "postgresql://postgres@127.0.0.1:5432/postgres"
READ_COMMANDS = [
    ("status",),
    ("orders", "--all"),
    ("positions",),
    ("discrepancies",),
    ("events",),
    ("replay", "--until", "1"),
    ("history", "0123456789ab"),
]


def _schema_exists(schema: str) -> bool:
    import psycopg

    with psycopg.connect(PG) as conn:
        return conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is not None


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: c[0])
def test_a_postgres_read_never_creates_an_unknown_schema(tmp_path: Path, command: tuple[str, ...]) -> None:
    schema = f"trueup_typo_{os.getpid()}_{command[0]}"
    url = f"{PG}?schema={schema}"
    error = one_line_error(trueup(*command, "--store", url, cwd=tmp_path))
    assert f"schema {schema!r} does not exist" in error
    assert not _schema_exists(schema)  # nothing created


def test_a_postgres_schema_without_tables_is_no_store_and_a_writer_still_creates_it(tmp_path: Path) -> None:
    import psycopg

    schema = f"trueup_empty_{os.getpid()}"
    url = f"{PG}?schema={schema}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        error = one_line_error(trueup("status", "--store", url, cwd=tmp_path))
        assert f"no trueup tables ({schema}.trueup_events)" in error
        with psycopg.connect(PG) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchone()
        assert tables == (0,)
        with Ledger.open(url) as ledger:  # library code writes: it creates the store
            ledger.intend(ACCOUNT, "C1", "AAPL", "BUY", D(1))
        done = trueup("orders", "--store", url, "--json", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert [o["client_order_id"] for o in json.loads(done.stdout)] == ["C1"]
    finally:
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_orders_all_on_a_long_book_prints_every_order_within_80_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'long.db'}"
    n = 700  # above trueup.cli_stream.STREAM_ROWS: written row by row
    with Ledger.open(url) as ledger:
        for i in range(n):
            ledger.intend(ACCOUNT, f"L{i:04d}", "AAPL", "BUY", D(1))
    done = trueup("orders", "--all", "--store", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines)
    ids = [line.split("│")[2].strip() for line in lines if line.startswith("│")]
    assert ids == [f"L{i:04d}" for i in range(n)]
    assert f"{n} order(s)" in done.stderr
