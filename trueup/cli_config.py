"""The `trueup run` daemon command and the `trueup config` group (check, init, reference).

`run` loads the config file (``--config``, default ``trueup.toml``), checks that every
environment variable and sink it names is set, sets up logging and runs the daemon until
SIGTERM / SIGINT. A config that does not load or check exits 1 with one line per problem.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from trueup.cli_support import EXIT_ERROR, emit_json
from trueup.domain.errors import TrueupError

__all__ = ["config_app", "config_check", "config_init", "config_reference", "register_config_commands", "run"]


config_app = typer.Typer(help="Check, write and document the `trueup run` config file.", no_args_is_help=True)


def _config_or_exit(path: Path) -> Any:  # noqa: ANN401 - a trueup.operations.config.Config
    from trueup.operations.config import load_config  # noqa: PLC0415

    try:
        return load_config(path)
    except TrueupError as e:
        sys.stderr.write(f"trueup: config error: {e}\n")
        raise typer.Exit(EXIT_ERROR) from None


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="The config file (TOML).")]) -> None:
    """Validate a config file and print it resolved (preset applied, secrets as ***); exit 1 if wrong."""
    config = _config_or_exit(path)
    emit_json(config.describe())


@config_app.command("init")
def config_init(
    preset: Annotated[str, typer.Option(help="conservative | aggressive | paper")] = "conservative",
    output: Annotated[
        Path | None, typer.Option(help="Write here instead of stdout (never overwrites).")
    ] = None,
) -> None:
    """Write a commented starting config file for a preset."""
    from trueup.operations.config import PRESETS  # noqa: PLC0415
    from trueup.operations.reference import starting_file  # noqa: PLC0415

    if preset not in PRESETS:
        sys.stderr.write(
            f"trueup: config error: preset: must be one of {', '.join(PRESETS)}, got {preset!r}\n"
        )
        raise typer.Exit(EXIT_ERROR)
    text = starting_file(preset)
    if output is None:
        sys.stdout.write(text)
        return
    if output.exists():
        sys.stderr.write(f"trueup: {output} exists; not overwritten\n")
        raise typer.Exit(EXIT_ERROR)
    output.write_text(text, encoding="utf-8")


@config_app.command("reference")
def config_reference() -> None:
    """Print the config reference (Markdown), generated from the config Structs."""
    from trueup.operations.reference import config_reference as reference  # noqa: PLC0415

    sys.stdout.write(reference())


def run(
    config_path: Annotated[Path, typer.Option("--config", help="The config file (TOML).")] = Path(
        "trueup.toml"
    ),
    log_format: Annotated[
        str | None, typer.Option(help="text | json (default: the file's log_format).")
    ] = None,
) -> None:
    """Run the reconciliation daemon for every configured account until SIGTERM / SIGINT."""
    config = _config_or_exit(config_path)
    from trueup.operations.config import missing_env  # noqa: PLC0415
    from trueup.operations.sinks import sink_problems  # noqa: PLC0415

    missing = missing_env(config) or sink_problems(config, dict(os.environ))
    if log_format not in {None, "text", "json"}:
        missing.insert(0, f"--log-format: must be one of text, json, got {log_format!r}")
    if missing:
        for line in missing:
            sys.stderr.write(f"trueup: config error: {line}\n")
        raise typer.Exit(EXIT_ERROR)
    try:
        from trueup.operations.brokers import secret_values  # noqa: PLC0415
        from trueup.operations.daemon import run_daemon  # noqa: PLC0415
        from trueup.operations.logs import setup_logging  # noqa: PLC0415
    except ImportError as e:
        sys.stderr.write(f"trueup: {e}\n")
        raise typer.Exit(EXIT_ERROR) from None
    chosen = log_format or config.file.log_format
    setup_logging(config.file.log_level, as_json=chosen == "json", secrets=secret_values(config.env_names()))
    raise typer.Exit(run_daemon(config))


def register_config_commands(app: typer.Typer) -> None:
    """Add the `config` group and the `run` command to the `trueup` app."""
    app.add_typer(config_app, name="config")
    app.command()(run)
