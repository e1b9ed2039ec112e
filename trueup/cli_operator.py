"""The operator commands of `trueup`: resolve, abandon, accept-quantity, unlock, claim, override, history.

Each acts in the name of ``--operator`` (default: the OS user), who must hold the
``manage_reconciliation`` permission in the `trueup run` config (``--config``, default
``trueup.toml`` or TRUEUP_CONFIG)::

    [operators.alice]
    permissions = ["manage_reconciliation"]

and each stores who and why in the log (`OperatorLog.Acted`, with the change, in one
transaction), which `trueup events` and `trueup history ID` show.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from trueup.application import operator as actions
from trueup.application.operator import Operator
from trueup.cli_support import (
    JsonOption,
    OperatorOption,
    ReasonOption,
    StoreOption,
    console,
    emit_json,
    exit_for,
    fail,
    notes,
    os_user,
    plain,
    reading,
)
from trueup.domain.errors import TrueupError
from trueup.ledger import Ledger

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config", envvar="TRUEUP_CONFIG", help="The trueup run config granting operators permissions."
    ),
]
OptionalReason = Annotated[str, typer.Option("--reason", help="Why (recorded with the command).")]


def _operator(config_path: Path, name: str) -> tuple[Operator, str]:
    """The operator with the permissions the config grants, and the config's store URL."""
    from trueup.operations.config import load_config  # noqa: PLC0415 - only operator commands need it

    if not name.strip():
        fail("no operator: pass --operator NAME")
    if not config_path.is_file():
        fail(
            f"no config at {config_path}: operator commands need the config that grants "
            "[operators.NAME] permissions (--config PATH or TRUEUP_CONFIG)"
        )
    try:
        config = load_config(config_path)
    except TrueupError as e:
        fail(f"config error: {e}")
    return Operator(name, config.permissions(name)), config.store


def _open(store: str | None, config_store: str) -> Any:  # noqa: ANN401 - a context manager of a Ledger
    return reading(store or config_store)


def _done(
    ledger: Ledger, account: str | None, message: str, record: dict[str, Any], *, as_json: bool
) -> None:
    if as_json:
        emit_json(record)
    else:
        console.print(message)
    exit_for(ledger, account)


def resolve(  # noqa: PLR0913, PLR0917 - typer options are parameters
    ident: Annotated[
        str, typer.Argument(metavar="ID", help="Discrepancy id (as `discrepancies` prints it).")
    ],
    reason: ReasonOption,
    operator: OperatorOption = "",
    config: ConfigOption = Path("trueup.toml"),
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Mark a discrepancy resolved, with the reason; stored with the operator."""
    who, config_store = _operator(config, operator or os_user())
    with _open(store, config_store) as ledger:
        view = actions.resolve_discrepancy(ledger.writer, ledger.queries, who, ident, reason)
        _done(
            ledger,
            None,
            f"resolved {view.kind} {view.key} ({view.id}) by {who.name}: {reason}",
            {"id": str(view.id), "kind": view.kind, "key": view.key, "by": who.name, "reason": reason},
            as_json=as_json,
        )


def abandon(  # noqa: PLR0913, PLR0917 - typer options are parameters
    account: Annotated[str, typer.Argument(help="Broker account.")],
    client_order_id: Annotated[str, typer.Argument(metavar="CLIENT_ID", help="Our client order id.")],
    reason: ReasonOption,
    operator: OperatorOption = "",
    config: ConfigOption = Path("trueup.toml"),
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Close an order you checked is gone at the broker (no fills); resolves its LOST, lifts its lock."""
    who, config_store = _operator(config, operator or os_user())
    with _open(store, config_store) as ledger:
        settled = actions.abandon_order(
            ledger.writer, ledger.queries, who, account, client_order_id, reason=reason
        )
        _done(
            ledger,
            account,
            f"abandoned {account} {client_order_id} by {who.name}: {reason}; "
            f"{len(settled)} discrepancy(ies) resolved",
            {"account": account, "client_order_id": client_order_id, "resolved": [str(i) for i in settled]},
            as_json=as_json,
        )


def accept_quantity(  # noqa: PLR0913, PLR0917 - typer options are parameters
    account: Annotated[str, typer.Argument(help="Broker account.")],
    client_order_id: Annotated[str, typer.Argument(metavar="CLIENT_ID", help="Our client order id.")],
    quantity: Annotated[
        str, typer.Argument(metavar="QUANTITY", help="The broker's quantity, as checked there.")
    ],
    reason: ReasonOption,
    operator: OperatorOption = "",
    config: ConfigOption = Path("trueup.toml"),
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Take a broker quantity nobody asked for (QUANTITY_CHANGED); the next reconcile books it."""
    try:
        amount = Decimal(quantity)
    except InvalidOperation:
        fail(f"quantity {quantity!r} is not a number")
    who, config_store = _operator(config, operator or os_user())
    with _open(store, config_store) as ledger:
        settled = actions.accept_quantity(
            ledger.writer, ledger.queries, who, account, client_order_id, quantity=amount, reason=reason
        )
        _done(
            ledger,
            account,
            f"quantity {amount} of {account} {client_order_id} accepted by {who.name}: {reason}; "
            f"{len(settled)} discrepancy(ies) resolved; the next reconcile takes it",
            {
                "account": account,
                "client_order_id": client_order_id,
                "quantity": str(amount),
                "resolved": [str(i) for i in settled],
            },
            as_json=as_json,
        )


def unlock(  # noqa: PLR0913, PLR0917 - typer options are parameters
    account: Annotated[str, typer.Argument(help="Broker account.")],
    symbol: Annotated[str, typer.Argument(help="The locked symbol.")],
    reason: OptionalReason = "",
    operator: OperatorOption = "",
    config: ConfigOption = Path("trueup.toml"),
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Lift a symbol lock."""
    who, config_store = _operator(config, operator or os_user())
    with _open(store, config_store) as ledger:
        actions.unlock_symbol(ledger.writer, who, account, symbol, reason)
        _done(
            ledger,
            account,
            f"unlocked {account} {symbol} by {who.name}" + (f": {reason}" if reason else ""),
            {"account": account, "symbol": symbol, "by": who.name, "reason": reason},
            as_json=as_json,
        )


def claim(  # noqa: PLR0913, PLR0917 - typer options are parameters
    account: Annotated[str, typer.Argument(help="Broker account.")],
    strategy: Annotated[str, typer.Argument(help="The strategy that owns the symbol.")],
    symbol: Annotated[str, typer.Argument(help="The symbol.")],
    reason: OptionalReason = "",
    operator: OperatorOption = "",
    config: ConfigOption = Path("trueup.toml"),
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Give a symbol to a strategy: orphan orders in it then quarantine only that strategy."""
    who, config_store = _operator(config, operator or os_user())
    with _open(store, config_store) as ledger:
        actions.claim_symbol(ledger.writer, who, account, strategy, symbol, reason=reason)
        _done(
            ledger,
            account,
            f"{account} {symbol} claimed for {strategy} by {who.name}",
            {"account": account, "strategy": strategy, "symbol": symbol, "by": who.name, "reason": reason},
            as_json=as_json,
        )


def override(  # noqa: PLR0913, PLR0917 - typer options are parameters
    account: Annotated[str, typer.Argument(help="Broker account.")],
    reason: ReasonOption,
    operator: OperatorOption = "",
    config: ConfigOption = Path("trueup.toml"),
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open the account's gate by hand (locks of LOST orders still hold)."""
    who, config_store = _operator(config, operator or os_user())
    with _open(store, config_store) as ledger:
        actions.override_gate(ledger.writer, who, account, reason)
        state = ledger.gate(account)
        _done(
            ledger,
            account,
            f"gate of {account} overridden by {who.name}: now {state}",
            {"account": account, "gate": state, "by": who.name, "reason": reason},
            as_json=as_json,
        )


def history(
    ident: Annotated[
        str, typer.Argument(metavar="ID", help="Discrepancy id (as `discrepancies` prints it).")
    ],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """A discrepancy's history: raised, resolved, and every operator command that settled it."""
    with reading(store) as ledger:
        view = actions.find_discrepancy(ledger.queries, ident)
        steps = actions.discrepancy_history(ledger.writer, view)
        if as_json:
            emit_json(
                {
                    "discrepancy": view,
                    "history": [
                        {
                            "event": type(e).__qualname__,
                            **{k: v for k, v in vars(e).items() if k != "originator_id"},
                        }
                        for e in steps
                    ],
                }
            )
        else:
            console.print(f"{view.id} {view.severity} {view.kind} {view.account} {view.key}")
            for event in steps:
                fields = {
                    k: v
                    for k, v in vars(event).items()
                    if k not in {"originator_id", "originator_version", "timestamp"} and plain(v) != ""
                }
                name = type(event).__qualname__
                summary = "; ".join(f"{k} {plain(v)}" for k, v in fields.items())
                console.print(f"  {plain(event.timestamp)} {name}: {summary}", soft_wrap=True)
            if view.resolution is None:
                notes.print("open")
        exit_for(ledger, view.account)


def register_operator_commands(app: typer.Typer) -> None:
    """Add the operator commands to the `trueup` app."""
    for command in (resolve, abandon, unlock, claim, override, history):
        app.command()(command)
    app.command("accept-quantity")(accept_quantity)
