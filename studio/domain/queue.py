"""The fair launch order of queued fine-tuning jobs: round-robin across clients, FIFO within one.

One client's thousands of queued jobs must not delay another client's first job beyond the time it
takes for capacity to free up. The tracker asks the store which clients have jobs waiting, orders them
here, and launches each client's oldest waiting job in that order while capacity lasts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# A job's `priority` orders its own client's queue (higher first); it never moves other clients' jobs.
MIN_PRIORITY, MAX_PRIORITY = -10, 10


def fair_order(waiting: Mapping[str, int], *, last_launch: Mapping[str, int]) -> list[str]:
    """Return the clients of `waiting` (client -> jobs waiting) in launch order.

    Clients never launched for come first, then the others by how long ago their last launch was
    (the least recent first); between equals, the client with fewer jobs waiting goes first, so a
    single job is not held behind sweeps (each pass still serves every client once), then by id.
    `last_launch` maps a client to a counter value that grows with every launch.
    """
    return sorted(waiting, key=lambda client: (last_launch.get(client, -1), waiting[client], client))


def jobs_ahead(own_ahead: int, others_waiting: Iterable[int]) -> int:
    """Return how many jobs launch before a waiting job, at most.

    `own_ahead` of its client's jobs go first; each pass of the round-robin launches one job of
    every client, so another client with `n` waiting goes first `min(n, own_ahead + 1)` times at most.
    Limits and cancels only shorten this.
    """
    return own_ahead + sum(min(n, own_ahead + 1) for n in others_waiting)


def estimated_start(*, ahead: int, running: int, mean_run_s: float | None, now: int) -> int | None:
    """Return when a job with `ahead` jobs before it should start: `running` slots turning over every
    `mean_run_s` seconds (None when no run time is known yet)."""
    if mean_run_s is None:
        return None
    return now + round(ahead // max(1, running) * mean_run_s)


def launch_budget(*, pending: int, max_pending: int) -> int:
    """Return how many jobs may be launched now: Ray holds at most `max_pending` not yet running.

    Jobs beyond it wait in Mini Studio's queue, where the order is fair, instead of in Ray's, where
    it is first come, first served.
    """
    return max(0, max_pending - pending)
