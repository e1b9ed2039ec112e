"""The layering: the domain imports no I/O and no broker SDK; trueup needs no extra; files stay short."""

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


def test_operations_needs_its_extra_only_when_used() -> None:
    # aiohttp and prometheus_client blocked: trueup, its CLI module and the config still import;
    # the daemon, endpoint and metrics fail with the extra's install line.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'aiohttp', 'prometheus_client'}:\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import trueup, trueup.cli, trueup.operations, trueup.operations.config, trueup.operations.status\n"
        "for name in ('daemon', 'http', 'metrics'):\n"
        "    try:\n"
        "        __import__('trueup.operations.' + name)\n"
        "    except ImportError as e:\n"
        "        print(name, e)\n"
    )
    result = subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=DOMAIN.parents[1]
    )
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["daemon", "http", "metrics"], result.stderr
    assert all("pip install 'trueup[ops]'" in line for line in lines), lines


# -- the package's layers ------------------------------------------------------------------

PACKAGE = DOMAIN.parent

LAYERS = ("trueup.domain", "trueup.adapters", "trueup.projections", "trueup.application")
"""Inner to outer; every other module of trueup (facade, submission, service, CLI) is on top."""

LEAVES = {"trueup.faults"}
"""Test hooks that import nothing of trueup: any layer above the domain may use them."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for rank, prefix in enumerate(LAYERS):
        if module == prefix or module.startswith(f"{prefix}."):
            return rank
    return len(LAYERS)


def trueup_imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every import of a trueup module in the file (function-level and TYPE_CHECKING ones too),
    with the names taken from it."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.split(".")[0] == "trueup"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "trueup":
                continue
            for alias in node.names:
                # `from trueup.x import y` may import the module trueup.x.y
                submodule = f"{node.module}.{alias.name}"
                if (PACKAGE.parent / Path(*submodule.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*submodule.split(".")) / "__init__.py"
                ).exists():
                    found.append((submodule, []))
                else:
                    found.append((node.module, [alias.name]))
    return found


def graph() -> dict[str, list[tuple[str, list[str]]]]:
    return {module_name(path): trueup_imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_nothing_imports_upward() -> None:
    offenders = []
    for module, imports in graph().items():
        for imported, _ in imports:
            if imported in LEAVES:
                ok = module not in LEAVES and layer_of(module) > 0
            else:
                ok = layer_of(imported) <= layer_of(module)
            if not ok:
                offenders.append(f"{module} -> {imported}")
    assert offenders == []


def test_no_leading_underscore_name_is_taken_from_another_module() -> None:
    offenders = [
        f"{module}: from {imported} import {', '.join(names)}"
        for module, imports in graph().items()
        for imported, names in imports
        if imported != module and any(n.startswith("_") and not n.startswith("__") for n in names)
    ]
    offenders += [
        f"{module}: imports {imported}"
        for module, imports in graph().items()
        for imported, _ in imports
        if any(part.startswith("_") and not part.startswith("__") for part in imported.split("."))
    ]
    assert offenders == []


def test_the_import_graph_has_no_circle() -> None:
    edges = {
        module: {imported for imported, _ in imports if imported != module}
        for module, imports in graph().items()
    }
    # A package's __init__ importing its own modules is how packages re-export; the circle
    # that matters runs between modules.
    circles = []
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(edges.get(module, ())):
            if state.get(imported) == 1:
                circles.append(" -> ".join([*path[path.index(imported) :], imported]))
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_the_guards_see_what_they_forbid(tmp_path: Path) -> None:
    # Check: each rule refuses the kind of import it exists for.
    assert layer_of("trueup.application.books") > layer_of("trueup.projections.queries")
    assert layer_of("trueup.ledger") > layer_of("trueup.application.books")
    upward = tmp_path / "upward.py"
    upward.write_text("from trueup.ledger import _private\nimport trueup.service\n")
    assert trueup_imports(upward) == [("trueup.ledger", ["_private"]), ("trueup.service", [])]


# -- the size of a file --------------------------------------------------------------------

MAX_LINES = 600
"""No file of trueup is longer: past it, a file is split by concern."""



def too_long(root: Path) -> dict[str, int]:
    """Each `*.py` file under `root` over MAX_LINES, by its path from the repository, with its lines."""
    lengths = {
        path.relative_to(root.parent).as_posix(): len(path.read_text().splitlines())
        for path in sorted(root.rglob("*.py"))
    }
    return {name: lines for name, lines in lengths.items() if lines > MAX_LINES}


def test_no_file_is_over_600_lines() -> None:
    assert too_long(PACKAGE) == {}


def test_the_size_guard_sees_a_long_file(tmp_path: Path) -> None:
    # Check: a file one line over is caught, one at the limit is not, wherever it is.
    package = tmp_path / "trueup"
    (package / "adapters").mkdir(parents=True)
    (package / "adapters" / "long.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (package / "ok.py").write_text("x = 1\n" * MAX_LINES)
    assert too_long(package) == {"trueup/adapters/long.py": MAX_LINES + 1}
