"""The fair launch order of queued fine-tuning jobs: round-robin across clients, FIFO within one.

One client's thousands of queued jobs must not delay another client's first job beyond the time it
takes for capacity to free up. The tracker asks the store which clients have jobs waiting, orders them
here, and launches each client's oldest waiting job in that order while capacity lasts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def fair_order(waiting: Iterable[str], *, last_launch: Mapping[str, int]) -> list[str]:
    """Return the clients of `waiting` in launch order.

    Clients never launched for (in `waiting`'s order, which the store gives by client id) come
    first, then the others by how long ago their last launch was (the least recent first).
    `last_launch` maps a client to a counter value that grows with every launch.
    """
    clients = list(dict.fromkeys(waiting))
    return sorted(clients, key=lambda client: last_launch.get(client, -1))


def launch_budget(*, pending: int, max_pending: int) -> int:
    """Return how many jobs may be launched now: Ray holds at most `max_pending` not yet running.

    Jobs beyond it wait in Mini Studio's queue, where the order is fair, instead of in Ray's, where
    it is first come, first served.
    """
    return max(0, max_pending - pending)
