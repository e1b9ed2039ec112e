"""`trueup run`'s exit status on a config error, and the docs that state it (the CLI's rule: 1)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from trueup.cli_support import EXIT_CRITICAL, EXIT_ERROR

ROOT = Path(__file__).resolve().parents[2]
RUN_DOC = ROOT / "docs" / "cli" / "run.md"
CONFIG_DOC = ROOT / "docs" / "cli" / "config.md"
OPERATIONS = ROOT / "docs" / "operations.md"

BAD = {
    "a value out of bounds": (
        '[accounts.ib1]\nbroker = "ib"\naccount_id = "DU1"\ninflight_retries = 0\n',
        [],
    ),
    "not TOML": ("[accounts.ib1\n", []),
    "no account": ('preset = "paper"\n', []),
    "a credential not set": (
        (
            '[accounts.a]\nbroker = "alpaca"\naccount_id = "PA1"\n'
            'credentials = { api_key = "NO_SUCH_VAR_1", secret_key = "NO_SUCH_VAR_2" }\n'
        ),
        [],
    ),
    "a bad --log-format": ('[accounts.p]\nbroker = "paper"\naccount_id = "P"\n', ["--log-format", "xml"]),
}


def run(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "trueup.toml"
    config.write_text(text)
    return subprocess.run(  # noqa: S603 - our interpreter, our command
        [sys.executable, "-m", "trueup.cli", "run", "--config", str(config), *extra],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        timeout=60,
    )


@pytest.mark.parametrize("case", list(BAD))
def test_a_config_error_exits_1_never_2_before_anything_opens(tmp_path: Path, case: str) -> None:
    text, extra = BAD[case]
    result = run(tmp_path, text, *extra)
    assert result.returncode == EXIT_ERROR, result.stderr
    assert result.returncode != EXIT_CRITICAL  # 2 would tell a script a CRITICAL is open
    assert result.stderr.startswith("trueup: config error: "), result.stderr
    assert not (tmp_path / "trueup.db").exists()


def test_the_docs_state_the_exit_status_the_code_gives(tmp_path: Path) -> None:
    measured = run(tmp_path, BAD["a value out of bounds"][0]).returncode
    run_doc = RUN_DOC.read_text()
    row = re.search(r"^\| (\d) \| a config error", run_doc, re.MULTILINE)
    assert row, "docs/cli/run.md lacks the exit-code row of a config error"
    assert int(row[1]) == measured
    unit = re.search(r"^RestartPreventExitStatus=(\d+)", OPERATIONS.read_text(), re.MULTILINE)
    assert unit, "the systemd unit in docs/operations.md lacks RestartPreventExitStatus"
    assert int(unit[1]) == measured  # systemd must not loop on a config error
    for doc in (RUN_DOC, CONFIG_DOC, OPERATIONS):
        text = " ".join(doc.read_text().split())
        assert not re.search(r"exits? 2 on a config error", text, re.IGNORECASE), doc.name
        assert re.search(rf"\bexits? {measured}\b", text, re.IGNORECASE), doc.name
