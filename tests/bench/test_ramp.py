"""The benchmark's ramp: which loads it offers, given which steps passed (no server involved)."""

from __future__ import annotations

from bench.run import Ramp
from bench.load import StepResult


def walk(ramp: Ramp, capacity: float) -> list[float]:
    """The loads the ramp offers to a server that sustains up to `capacity` msg/s."""
    offered = []
    while (rate := ramp.next_rate()) is not None:
        offered.append(rate)
        ok = rate <= capacity
        ramp.steps.append(StepResult("rooms", rate, {"ok": ok, "recipients_per_message": 10, "generator_bound": False,
                                                     "why": None if ok else "too slow"}))
    return offered


def test_fixed_loads_then_doubling_then_two_bisections():
    assert walk(Ramp((50, 100, 200, 400), 50, 6400, 2), capacity=1100) == [50, 100, 200, 400, 800, 1600, 1200, 1000]
    assert walk(Ramp((50, 100, 200, 400), 50, 6400, 2), capacity=1300) == [50, 100, 200, 400, 800, 1600, 1200, 1400]


def test_sustained_is_the_best_passing_step_and_the_failure_above_it():
    ramp = Ramp((50, 100, 200, 400), 50, 6400, 2)
    walk(ramp, capacity=1100)
    sustained = ramp.summary("rooms")["sustained"]
    assert (sustained["messages_per_s"], sustained["deliveries_per_s"]) == (1000, 10_000)
    assert (sustained["broke_at"], sustained["broke_because"]) == (1200, "too slow")


def test_no_bisection_and_the_ceiling():
    assert walk(Ramp((50, 100), 50, 400, 0), capacity=10_000) == [50, 100, 200, 400]
    assert walk(Ramp((), 20, 640, 1), capacity=100) == [20, 40, 80, 160, 120]


def test_a_first_failure_is_not_bisected_below_nothing():
    assert walk(Ramp((50,), 50, 6400, 2), capacity=10) == [50]


def test_a_stack_slower_than_the_first_step_is_halved_down_to_a_pass_then_bisected():
    ramp = Ramp((), 20, 640, 2, halvings=3)
    assert walk(ramp, capacity=7) == [20, 10, 5, 8, 6]
    sustained = ramp.summary("big room")["sustained"]
    assert (sustained["messages_per_s"], sustained["broke_at"]) == (6, 8)
    # Never doubled back into a rate that already failed; the fixed loads all run first.
    assert walk(Ramp((50, 100), 50, 400, 0, halvings=2), capacity=30) == [50, 100, 25]


def test_halvings_stop_where_they_are_told():
    ramp = Ramp((), 20, 640, 2, halvings=3)
    assert walk(ramp, capacity=1) == [20, 10, 5, 2.5]
    assert ramp.summary("big room")["sustained"] is None
    assert walk(Ramp((), 20, 640, 2, halvings=0), capacity=1) == [20]
