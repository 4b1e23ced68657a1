"""How the CLI prints: JSON for scripts (`--json`), tables and short lines for people; sizes and times."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Tables and live displays go to stdout; errors and progress bars to stderr, so `--json` output and
# piped answers stay clean.
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)
_UNITS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


def print_json(value: Any) -> None:
    """Print `value` as indented JSON on stdout (one document per command, for `jq` and scripts)."""
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """Print rows under their column titles; None shows as "-"."""
    table = Table(*columns, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        table.add_row(*("-" if cell is None else str(cell) for cell in row))
    console.print(table)


def print_fields(pairs: Iterable[tuple[str, Any]]) -> None:
    """Print `name: value` lines for one object; None values are left out."""
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for name, value in pairs:
        if value is not None:
            table.add_row(name, str(value))
    console.print(table)


def error(message: str) -> None:
    """Print `error: message` on stderr."""
    err_console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)


def human_bytes(size: int | float | None) -> str:
    """Return a byte count as `1.5 MiB`, `512 B`; "-" for None."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def parse_size(text: str) -> int:
    """Return the bytes in `64MiB`, `64M`, `1.5GB` or `1024` (k/M/G/T are powers of 1024 either way).

    Raises:
        ValueError: not a size.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (e.g. 64MiB, 512k, 1048576)")
    number, unit, _ = match.groups()
    return int(float(number) * 1024 ** _UNITS[unit.lower()])


def when(timestamp: int | float | None) -> str:
    """Return a Unix time as local `YYYY-MM-DD HH:MM:SS`; "-" for None."""
    if not timestamp:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def duration(seconds: float | None) -> str:
    """Return seconds as `1h02m`, `3m05s`, `42s`; "-" for None."""
    if seconds is None or seconds < 0:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"
