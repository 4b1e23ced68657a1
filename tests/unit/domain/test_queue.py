"""The fair launch order (round-robin across clients, the least recently served first) and a waiting
job's place in it."""

from __future__ import annotations

from studio.domain.queue import estimated_start, fair_order, jobs_ahead, launch_budget


def test_clients_never_served_come_first_fewest_waiting_first() -> None:
    assert fair_order({"b": 1, "a": 1, "c": 1}, last_launch={"a": 3}) == ["b", "c", "a"]
    # A single waiting job is not held behind a sweep of a hundred.
    assert fair_order({"sweep": 100, "single": 1}, last_launch={}) == ["single", "sweep"]


def test_the_least_recently_served_client_goes_next_whatever_it_has_waiting() -> None:
    waiting = {"a": 1, "b": 50, "c": 1}
    assert fair_order(waiting, last_launch={"a": 5, "b": 2, "c": 9}) == ["b", "a", "c"]


def test_jobs_ahead_count_one_per_other_client_and_pass() -> None:
    assert jobs_ahead(0, []) == 0
    assert jobs_ahead(0, [100, 100]) == 2  # the first pass: one job of each other client
    assert jobs_ahead(2, [100, 1]) == 2 + 3 + 1  # three passes; the second client has one job only


def test_the_start_estimate_turns_running_slots_over() -> None:
    assert estimated_start(ahead=0, running=2, mean_run_s=60, now=1000) == 1000
    assert estimated_start(ahead=5, running=2, mean_run_s=60, now=1000) == 1120
    assert estimated_start(ahead=5, running=0, mean_run_s=60, now=1000) == 1300
    assert estimated_start(ahead=5, running=2, mean_run_s=None, now=1000) is None


def test_the_budget_is_what_ray_may_still_hold() -> None:
    assert launch_budget(pending=0, max_pending=2) == 2
    assert launch_budget(pending=2, max_pending=2) == 0
    assert launch_budget(pending=5, max_pending=2) == 0
