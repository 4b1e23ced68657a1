"""The fair launch order: round-robin across clients, the least recently served first."""

from __future__ import annotations

from studio.domain.queue import fair_order, launch_budget


def test_clients_never_served_come_first_in_the_given_order() -> None:
    assert fair_order(["b", "a", "c"], last_launch={"a": 3}) == ["b", "c", "a"]


def test_the_least_recently_served_client_goes_next() -> None:
    assert fair_order(["a", "b", "c"], last_launch={"a": 5, "b": 2, "c": 9}) == ["b", "a", "c"]


def test_a_client_is_listed_once() -> None:
    assert fair_order(["a", "a", "b"], last_launch={}) == ["a", "b"]


def test_the_budget_is_what_ray_may_still_hold() -> None:
    assert launch_budget(pending=0, max_pending=2) == 2
    assert launch_budget(pending=2, max_pending=2) == 0
    assert launch_budget(pending=5, max_pending=2) == 0
