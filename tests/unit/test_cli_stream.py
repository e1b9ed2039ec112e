"""Long tables are written row by row (trueup.cli_stream): every cell shown, 80 columns kept."""

from __future__ import annotations

import io

from trueup.cli_stream import column_widths, write_table

COLUMNS = ["account", "client id", "symbol", "qty"]


def rendered(rows: list[list[str]], width: int | None) -> list[str]:
    out = io.StringIO()
    write_table("orders", COLUMNS, rows, width=width, out=out)
    return out.getvalue().splitlines()


def test_every_row_and_cell_is_written_in_order() -> None:
    rows = [["DU1", f"C{i:05d}", "AAPL", str(i)] for i in range(1200)]
    lines = rendered(rows, 80)
    body = [line for line in lines if line.startswith("│")]
    assert [line.split("│")[2].strip() for line in body] == [f"C{i:05d}" for i in range(1200)]
    assert lines[1].startswith("┏")
    assert lines[-1].startswith("└")
    assert "client id" in lines[2]


def test_long_cells_fold_to_80_columns_and_never_with_wide() -> None:
    long_id = "strategy-alpha-" + "x" * 90
    rows = [["DU1", long_id, "NSE:SBIN:CNC", "10"]]
    folded = rendered(rows, 80)
    assert all(len(line) <= 80 for line in folded)
    cells = "".join(line.split("│")[2].strip() for line in folded if line.startswith("│"))
    assert cells == long_id  # folded, nothing lost
    wide = rendered(rows, None)
    assert any(long_id in line for line in wide)


def test_widths_shrink_the_widest_column_first() -> None:
    widths = column_widths(COLUMNS, [["DU1", "c" * 100, "AAPL", "10"]], 80)
    assert sum(widths) + 3 * len(COLUMNS) + 1 <= 80
    assert widths[0] == len("account")
    assert widths[2] == len("symbol")
