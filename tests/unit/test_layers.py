"""The layering DESIGN.md asks for: the domain imports no I/O and no broker SDK; trueup needs no extra."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

DOMAIN = Path(__file__).resolve().parents[2] / "trueup" / "domain"
ALLOWED_ROOTS = {
    "__future__",
    "collections",
    "dataclasses",
    "datetime",
    "decimal",
    "enum",
    "functools",
    "hashlib",
    "re",
    "typing",
    "uuid",
    "msgspec",
}


def allowed(name: str) -> bool:
    """The stdlib, msgspec, eventsourcing.domain and the domain itself; nothing else."""
    if name == "eventsourcing.domain":
        return True
    if name.split(".", maxsplit=1)[0] == "trueup":
        return name.startswith("trueup.domain")
    return name.split(".", maxsplit=1)[0] in ALLOWED_ROOTS


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_domain_imports_only_stdlib_msgspec_and_eventsourcing_domain() -> None:
    offenders = {
        path.name: sorted(name for name in imports_of(path) if not allowed(name))
        for path in sorted(DOMAIN.glob("*.py"))
    }
    assert {k: v for k, v in offenders.items() if v} == {}
    # The rule itself refuses what must stay out of the domain.
    assert not any(
        allowed(n)
        for n in (
            "sqlite3",
            "trueup.adapters.eventstore.store",
            "trueup.ledger",
            "eventsourcing.application",
            "ib_async",
        )
    )


def test_import_trueup_needs_no_broker_sdk() -> None:
    # Block the SDKs: importing them raises, as if the extras were not installed.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'ib_async', 'alpaca', 'kiteconnect', 'typer', 'rich'}:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import trueup, trueup.ledger, trueup.service, trueup.submission, trueup.subscriptions\n"
        "print('ok')\n"
    )
    result = subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=DOMAIN.parents[1]
    )
    assert result.stdout.strip() == "ok", result.stderr
