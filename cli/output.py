"""How the user commands print: tables sized to their content for people, the API's JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

console = Console()
error_console = Console(stderr=True)


def print_json(value: Any) -> None:
    # Plain print through the console's file: no Rich markup or wrapping may touch the JSON.
    console.file.write(json.dumps(value, indent=2) + "\n")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table at its natural width, so no id is cut, however narrow the terminal or pipe."""
    table = Table(*columns)
    for row in rows:
        table.add_row(*(Text("—" if cell is None else str(cell)) for cell in row))
    _print_whole(table)


def print_facts(facts: Sequence[tuple[str, Any]]) -> None:
    """Name and value pairs, one a line; values are printed as they are (no markup)."""
    table = Table.grid(padding=(0, 2))
    for name, value in facts:
        table.add_row(Text(name, style="bold"), Text("—" if value is None else str(value)))
    _print_whole(table)


def _print_whole(table: Table) -> None:
    natural = Measurement.get(console, console.options.update_width(10_000), table).maximum
    Console(width=max(console.width, natural)).print(table)


def moment(unix_seconds: int | None) -> str | None:
    if unix_seconds is None:
        return None
    return datetime.fromtimestamp(unix_seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def strategy_name(strategy: Any) -> str:
    return str(strategy["type"] if isinstance(strategy, dict) else strategy)
