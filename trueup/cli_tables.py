"""The tables of `trueup`: at 80 columns by default, every column with ``--wide``.

Ids, subjects and details fold rather than vanish; figures are quantized (`qty`, `price`,
`money`) while ``--json`` keeps them exact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from trueup.cli_stream import STREAM_ROWS, write_table
from trueup.cli_support import console, cost, money, notes, plain, price, qty, wide_console
from trueup.domain.views import DiscrepancyView, OrderView, PositionView


def out_console(wide: bool) -> Console:
    """The console of a command's output: unwrapped with --wide."""
    return wide_console() if wide else console


def make_table(title: str, columns: list[str], *, wide: bool) -> Table:
    """A table whose columns fold at 80 columns (or never wrap with --wide)."""
    table = Table(title=title, expand=False)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=wide)
    return table


def last_change(view: OrderView) -> datetime | None:
    """When the order was last changed (or created)."""
    moments = [m for m in (view.updated_at, view.created_at) if m is not None]
    return max(moments) if moments else None


def print_orders(views: list[OrderView], *, wide: bool) -> None:
    """Orders; --wide adds flags, inferred quantity, broker ids and strategy."""
    columns = ["account", "client id", "symbol", "side", "qty", "status", "filled", "avg"]
    if wide:
        columns += ["flags", "inferred", "broker ids", "strategy"]
    rows: list[list[str]] = []
    for v in views:
        row = [
            v.account,
            v.client_order_id,
            v.symbol,
            plain(v.side),
            qty(v.quantity),
            plain(v.status),
            qty(v.filled_qty),
            price(v.avg_fill_price),
        ]
        if wide:
            row += [
                plain(v.flags),
                qty(v.inferred_qty) if v.inferred_qty else "",
                ", ".join(v.broker_order_ids),
                v.strategy or "",
            ]
        rows.append(row)
    if len(rows) > STREAM_ROWS:
        write_table("orders", columns, rows, width=None if wide else console.width)
    else:
        table = make_table("orders", columns, wide=wide)
        for row in rows:
            table.add_row(*row)
        out_console(wide).print(table)
    notes.print(f"{len(views)} order(s)")


def discrepancy_table(title: str, views: list[DiscrepancyView], *, wide: bool) -> Table:
    """Discrepancies as a table: the id (as `trueup resolve` takes it) first."""
    columns = ["id", "severity", "kind", "account", "subject", "detail"]
    if wide:
        columns += ["ours / expected", "broker / actual", "evidence@", "resolution"]
    table = make_table(title, columns, wide=wide)
    for d in views:
        style = "bold red" if d.severity == "CRITICAL" else ("red" if d.severity == "ERROR" else "")
        row = [str(d.id) if wide else d.id.hex[:8], d.severity, d.kind, d.account, d.key, d.detail]
        if wide:
            row += [d.expected, d.actual, str(d.evidence_position or ""), d.resolution or ""]
        table.add_row(*row, style=style)
    return table


def print_status(report: dict[str, Any], *, wide: bool) -> None:
    """The status report: one row per account, then the log and the open discrepancies."""
    columns = ["account", "gate", "reasons", "locks", "quarantined", "open", "positions"]
    table = make_table(f"trueup status: {report['store']}", columns, wide=wide)
    for name, row in report["accounts"].items():
        gate_style = {"READY": "green", "BLOCKED": "bold red"}.get(row["gate"], "yellow")
        table.add_row(
            name,
            f"[{gate_style}]{row['gate']}[/]",
            "; ".join(row["reasons"]),
            ", ".join(f"{symbol} ({why})" for symbol, why in row["locked_symbols"].items()),
            ", ".join(row["quarantined"]),
            str(row["open_orders"]),
            str(row["positions"]),
        )
    out = out_console(wide)
    out.print(table)
    by_kind = plain(report["open_discrepancies_by_kind"]) or "none"
    out.print(
        f"log position {report['log_position']}, read models at {report['projection_position']}; "
        f"open discrepancies: {by_kind}"
    )
    if report["service"]:
        out.print(f"service: {plain(report['service'])}")


def print_positions(views: list[PositionView], *, wide: bool) -> None:
    """Positions: quantity, average cost, realized P&L (money to the cent)."""
    table = make_table("positions", ["account", "symbol", "qty", "avg cost", "realized P&L"], wide=wide)
    for p in views:
        table.add_row(p.account, p.symbol, qty(p.qty), cost(p.avg_cost), money(p.realized_pnl))
    out_console(wide).print(table)
