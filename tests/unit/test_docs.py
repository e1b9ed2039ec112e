"""The docs stand on their own and say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import trueup
from trueup.application.unit_of_work import MAX_ATTEMPTS

REPO = Path(__file__).resolve().parents[2]
FILES = [
    p
    for root in ("trueup", "tests", "docs")
    for p in (REPO / root).rglob("*")
    if p.suffix in {".py", ".md"} and p.name != "test_docs.py"
] + [REPO / "README.md"]


# A citation of the design, broker or library notes kept outside the repository, by file
# name (``DESIGN.md``) or by label (``DESIGN: 5 live``, ``per DESIGN``, ``BROKERS: "..."``):
# the docs and the code state the fact itself. ``EVENTSOURCING_*`` variables and the
# `BROKERS` constant of the config are names, not citations.
OUTSIDE = re.compile(
    r"\b(?:DESIGN|BROKERS|EVENTSOURCING)\.md\b"
    r"|\bDESIGN\b"
    r"|\bEVENTSOURCING\b(?!_)"
    r"|\bBROKERS\s*:\s*[\"“']"
    r"|\b(?:per|see|in|from) BROKERS\b|\bBROKERS says\b"
)


def test_no_file_cites_documents_outside_the_repository() -> None:
    cited = [
        f"{p.relative_to(REPO)}:{n}: {line.strip()}"
        for p in FILES
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert cited == []


@pytest.mark.parametrize(
    "line",
    [
        "see DESIGN.md",
        "period: seconds between periodic reconciliations (DESIGN: 5 live, 60 paper).",
        "# noqa: N818 - the name says what it is, per DESIGN",
        'BROKERS: "avgCost includes the multiplier"',
        "as EVENTSOURCING.md says",
        "per BROKERS, the field is",
        "BROKERS says avgCost includes the multiplier",
    ],
)
def test_the_citation_check_catches_each_form(line: str) -> None:
    assert OUTSIDE.search(line)


@pytest.mark.parametrize(
    "line",
    [
        'os.environ.setdefault("EVENTSOURCING_DISABLE_REDEFINITION_CHECK", "y")',
        'BROKERS: Final = ("paper", "alpaca", "kite", "ib")',
        '"broker": BROKERS,',
        "the design of the gate",
    ],
)
def test_the_citation_check_lets_names_pass(line: str) -> None:
    assert not OUTSIDE.search(line)


def test_storage_doc_states_the_retry_rounds_the_code_has() -> None:
    text = (REPO / "docs" / "storage.md").read_text()
    assert f"up to {MAX_ATTEMPTS}\n  rounds" in text or f"up to {MAX_ATTEMPTS} rounds" in text


def test_every_name_api_md_says_is_importable_from_trueup_is() -> None:
    header = (REPO / "docs" / "api.md").read_text().split("Every other name")[0]
    names = re.findall(r"`([A-Za-z_]+)`", header)
    assert "ReconciliationService" in names
    missing = [n for n in names if n != "trueup" and not hasattr(trueup, n)]
    assert missing == []
    assert set(trueup.__all__) >= {
        "ReconciliationService",
        "OrderRequest",
        "Submitter",
        "start_session",
        "GateState",
        "PositionPolicy",
        "ReconcileResult",
    }


def test_readme_does_not_say_every_command_exits_2() -> None:
    # Exit 2 is for the commands that read a store while a CRITICAL is open (events, replay
    # and rebuild too: tested in test_cli); config, run, demo and sink are no such command
    # (`trueup run` exits 1 on a config error), so "every command" would be false.
    assert "every command exits 2" not in (REPO / "README.md").read_text()
