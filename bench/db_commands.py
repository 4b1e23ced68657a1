"""Which commands reach the database during a phase, and from which process: MongoDB's profiler.

`profiled(url, database)` turns the profiler on at level 2 (every command is written to
`system.profile`) for the block's duration; `report(...)` then groups what it recorded by the process
that sent it (the client address's owner, e.g. `ServeReplica:studio:Ingress`), the command, the
collection and the shape of its filter, with counts per unit of work (e.g. per job created) and the
milliseconds the server measured. Profiling adds a write per command, so a phase profiled runs slower:
use it for counts and shares, not for rates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import psutil
from pymongo import AsyncMongoClient

# The keys of a command document that name the command itself (the first key), not its shape.
SHAPE_KEYS = ("filter", "q", "query")


@contextlib.asynccontextmanager
async def profiled(url: str, database: str) -> AsyncIterator[dt.datetime]:
    """Profile every command on `database` inside the block; yield when it started (UTC)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        db = client[database]
        await db["system.profile"].drop()
        started = dt.datetime.now(dt.UTC)
        await db.command("profile", 2)
        try:
            yield started
        finally:
            await db.command("profile", 0)
    finally:
        await client.close()


def owners(port: int) -> dict[str, str]:
    """Map each client address connected to `port` (`ip:port`) to a label of the process that owns it."""
    found: dict[str, str] = {}
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            connections = process.net_connections(kind="tcp")
            label = None
            for conn in connections:
                if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED:
                    label = label or _label(process)
                    found[f"{conn.laddr.ip}:{conn.laddr.port}"] = label
    return found


def _label(process: psutil.Process) -> str:
    line = " ".join(process.cmdline())
    if line.startswith("ray::"):
        return line.split()[0].removeprefix("ray::")
    return process.name()


def _shape(command: dict[str, Any]) -> str:
    name = next(iter(command))
    for key in SHAPE_KEYS:
        if isinstance(command.get(key), dict):
            return f"{name} {{{', '.join(sorted(command[key]))}}}"
    updates = command.get("updates") or command.get("deletes")
    if isinstance(updates, list) and updates and isinstance(updates[0], dict):
        return f"{name} x{len(updates)} {{{', '.join(sorted(updates[0].get('q') or {}))}}}"
    documents = command.get("documents")
    if isinstance(documents, list):
        return f"{name} x{len(documents)}"
    return name


async def report(url: str, database: str, port: int, *, since: dt.datetime, per: int, unit: str) -> list[str]:
    """Return lines: the recorded commands grouped by sender, command shape and collection, per `unit`."""
    names = owners(port)
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
    try:
        entries = await client[database]["system.profile"].find({"ts": {"$gte": since}}).to_list()
    finally:
        await client.close()
    counts: Counter[tuple[str, str, str]] = Counter()
    millis: Counter[tuple[str, str, str]] = Counter()
    for entry in entries:
        sender = names.get(str(entry.get("client", "")), "gone: " + str(entry.get("client", "?")))
        command = entry.get("command") or {"?": None}
        key = (sender, str(entry.get("ns", "")).split(".", 1)[-1], _shape(command))
        counts[key] += 1
        millis[key] += int(entry.get("millis", 0))
    total = sum(counts.values())
    lines = [
        f"database commands: {total:,} in all, {total / max(per, 1):.2f} per {unit}, "
        f"{sum(millis.values()) / max(per, 1):.2f} ms per {unit} (server-measured)",
        f"  {'per ' + unit:>9} {'ms':>7}  sender / collection / command",
    ]
    for key, count in counts.most_common(25):
        sender, collection, shape = key
        lines.append(f"  {count / max(per, 1):9.3f} {millis[key]:7d}  {sender} / {collection} / {shape}")
    return lines
