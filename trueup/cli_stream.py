"""Long tables written row by row: the look of `trueup`'s rich tables, at a fraction of the cost.

rich measures and renders every cell through its layout engine (about 2 ms a row): 12,000
orders took 8 s to print, 20 s with ``--wide``. A table of plain text cells needs none
of that: the column widths are the longest cell (shrunk, widest first, to fit the
console unless ``--wide``; a cell longer than its column folds onto more lines, as rich
folds it), and each row is written as soon as it is formatted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TextIO

STREAM_ROWS = 500
"""Tables with more rows than this are streamed (smaller ones go through rich)."""
_MIN_WIDTH = 4


def column_widths(columns: Sequence[str], rows: Sequence[Sequence[str]], limit: int | None) -> list[int]:
    """Each column's width: its longest cell or header, the widest shrunk until the table fits `limit`."""
    widths = [len(c) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    if limit is not None:
        frame = 3 * len(columns) + 1  # "│ " + " │ " between cells + " │"
        while sum(widths) + frame > limit and max(widths) > _MIN_WIDTH:
            widest = widths.index(max(widths))
            widths[widest] -= 1
    return widths


def _fold(cell: str, width: int) -> list[str]:
    return [cell[i : i + width] for i in range(0, len(cell), width)] or [""]


def _line(left: str, fill: str, middle: str, right: str, widths: Sequence[int]) -> str:
    return left + middle.join(fill * (w + 2) for w in widths) + right


def _cells(cells: Sequence[str], widths: Sequence[int]) -> Iterable[str]:
    folded = [_fold(cell, w) for cell, w in zip(cells, widths, strict=True)]
    for n in range(max(len(parts) for parts in folded)):
        parts = [(p[n] if n < len(p) else "").ljust(w) for p, w in zip(folded, widths, strict=True)]
        yield "│ " + " │ ".join(parts) + " │"


def write_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    width: int | None,
    out: TextIO | None = None,
) -> None:
    """Write a titled table, folding cells to fit `width` (None: never fold, ``--wide``)."""
    stream = out or sys.stdout
    widths = column_widths(columns, rows, width)
    total = sum(widths) + 3 * len(columns) + 1
    write = stream.write
    write(title.center(total).rstrip() + "\n")
    write(_line("┏", "━", "┳", "┓", widths) + "\n")
    for text in _cells(columns, widths):
        write(text.replace("│", "┃") + "\n")
    write(_line("┡", "━", "╇", "┩", widths) + "\n")
    for row in rows:
        write("\n".join(_cells(row, widths)) + "\n")
    write(_line("└", "─", "┴", "┘", widths) + "\n")
    stream.flush()
