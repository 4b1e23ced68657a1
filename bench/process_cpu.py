"""CPU time per process over a phase: which component a figure is spent in.

`snapshot()` records the user + system CPU seconds of each process the bench started (itself and its
descendants: the private Ray cluster), keyed by pid and labelled by what it runs
(`ray::ServeReplica:mini-studio:StudioIngress`, `haproxy`, `python` for the bench itself ...);
`report(before, after, wall, per, unit)` prints, per label, the share of a core it used over the phase
and its CPU milliseconds per unit of work, the busiest first. Processes that started during the phase
count from zero; ones that ended are missed (a short-lived worker's CPU is not seen).
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter

import psutil

Snapshot = dict[int, tuple[str, float]]


def _label(process: psutil.Process) -> str:
    line = " ".join(process.cmdline())
    if line.startswith("ray::"):  # an actor's title names the method it runs now: keep the class only
        return line.split()[0].removeprefix("ray::").split(".")[0]
    if process.pid == os.getpid():
        return "bench (load generator)"
    scripts = [os.path.basename(arg) for arg in process.cmdline()[1:] if arg.endswith(".py")]
    return f"{process.name()} {scripts[0]}" if scripts else process.name()


def snapshot() -> Snapshot:
    """Return {pid: (label, CPU seconds so far)} for this process and its descendants (the Ray cluster
    it started, with Serve's replicas, HAProxy and the database), nothing else on the machine."""
    found: Snapshot = {}
    me = psutil.Process()
    for process in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            found[process.pid] = (_label(process), times.user + times.system)
    return found


def spent(before: Snapshot, after: Snapshot) -> Counter[str]:
    """Return the CPU seconds each label spent between two snapshots."""
    found: Counter[str] = Counter()
    for pid, (label, seconds) in after.items():
        start = before.get(pid)
        found[label] += seconds - (start[1] if start else 0.0)
    return found


def short(label: str) -> str:
    """`ServeReplica:<app>:<deployment>` as its deployment's name; anything else as it is."""
    return label.rsplit(":", 1)[-1] if label.startswith("ServeReplica:") else label


def report(before: Snapshot, after: Snapshot, *, wall_s: float, per: int, unit: str) -> list[str]:
    """Return lines: per label, the share of a core over `wall_s` and CPU ms per `unit`, busiest first."""
    spent_by = spent(before, after)
    total = sum(spent_by.values())
    lines = [
        f"CPU over the phase: {total / wall_s * 100:.0f}% of a core in all, "
        f"{total * 1000 / max(per, 1):.2f} ms per {unit} ({os.cpu_count()} cores)",
    ]
    for label, seconds in spent_by.most_common(8):
        if seconds <= 0.01 * total:
            break
        share, each = seconds / wall_s * 100, seconds * 1000 / max(per, 1)
        lines.append(f"  {share:5.1f}% of a core  {each:6.2f} ms per {unit}  {label}")
    return lines
