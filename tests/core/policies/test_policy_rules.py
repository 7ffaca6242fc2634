"""The shared scaling rules (infaas_core/policies/rules.py) the autoscalers compose."""

from __future__ import annotations

import pytest

from infaas_core.policies.rules import (
    Cooldown,
    Sustained,
    apply_bounds,
    one_fewer_carries,
    over_capacity,
    replicas_needed,
    replicas_to_add,
)


def test_sustained_is_due_after_n_consecutive_evaluations_and_restarts_on_a_miss():
    """Rule: due on the N-th consecutive evaluation that holds; one that does not starts over."""
    s = Sustained(evaluations=3)
    assert [s.observe(True, t) for t in (0.0, 1.0)] == [False, False]
    assert s.observe(False, 2.0) is False  # the run is broken
    assert [s.observe(True, t) for t in (3.0, 4.0, 5.0)] == [False, False, True]
    assert s.observe(True, 6.0) is True  # stays due until the policy acts and resets
    s.reset()
    assert s.observe(True, 7.0) is False


def test_sustained_by_duration_counts_from_the_first_evaluation_of_the_run():
    """Rule: due once the condition has held since at least duration_s ago (INFaaS's
    load-latency delay), whatever the number of evaluations."""
    s = Sustained(duration_s=2.0)
    assert s.observe(True, 10.0) is False
    assert s.observe(True, 11.5) is False
    assert s.observe(True, 12.0) is True
    assert s.observe(False, 12.5) is False
    assert s.observe(True, 13.0) is False and s.since_s == 13.0


def test_sustained_with_a_zero_duration_is_due_at_once():
    assert Sustained(duration_s=0.0).observe(True, 5.0) is True


def test_sustained_with_both_limits_is_due_at_whichever_comes_first():
    s = Sustained(evaluations=10, duration_s=1.0)
    assert [s.observe(True, t) for t in (0.0, 0.5, 1.0)] == [False, False, True]
    s = Sustained(evaluations=2, duration_s=100.0)
    assert [s.observe(True, t) for t in (0.0, 0.5)] == [False, True]


def test_sustained_needs_a_limit():
    with pytest.raises(AssertionError):
        Sustained()


def test_cooldown_allows_one_action_per_period():
    """Rule: ready until marked, then again once period_s has passed since the mark."""
    c = Cooldown(30.0)
    assert c.ready(0.0)
    c.mark(5.0)
    assert not c.ready(5.0) and not c.ready(34.9)
    assert c.ready(35.0)
    c.mark(35.0)
    assert not c.ready(40.0)


def test_a_zero_cooldown_never_blocks():
    c = Cooldown(0.0)
    c.mark(1.0)
    assert c.ready(1.0)


def test_capacity_tests_compare_demand_with_slack_to_replica_throughput():
    """Rule (INFaaS checkModvar, slack 1.05): more needed when slack * demand > R * T1; one
    fewer suffices when slack * demand <= (R - 1) * T1."""
    assert over_capacity(100.0, 1, 100.0, 1.05)  # 105 > 100
    assert not over_capacity(100.0, 1, 100.0, 1.0)  # exactly carried
    assert not over_capacity(190.0, 2, 100.0, 1.05)  # 199.5 <= 200
    assert one_fewer_carries(95.0, 2, 100.0, 1.05)  # 99.75 <= 100
    assert not one_fewer_carries(96.0, 2, 100.0, 1.05)  # 100.8 > 100
    assert one_fewer_carries(0.0, 1, 100.0, 1.05)  # idle: zero replicas would carry nothing


def test_replicas_to_add_is_the_ceiling_of_the_excess_over_one_replica():
    """Rule: add ceil((slack * demand - R * T1) / T1), never a negative count."""
    assert replicas_to_add(20.0, 1, 25.0 / 3.0, 1.05) == 2  # 21 q/s on 8.33 q/s replicas: 3 in all
    assert replicas_to_add(100.0, 1, 100.0, 1.05) == 1
    assert replicas_to_add(1000.0, 1, 1000.0 / 3.0, 1.05) == 3  # 1050 / 333: 4 in all
    assert replicas_to_add(10.0, 4, 100.0, 1.05) == 0  # over-provisioned: nothing, not -3


def test_replicas_needed_carries_the_demand_alone():
    assert replicas_needed(20.0, 25.0 / 3.0, 1.05) == 3
    assert replicas_needed(0.0, 10.0, 1.05) == 0
    assert replicas_needed(100.0, 110.0, 1.05) == 1


def test_replicas_to_add_agrees_with_replicas_needed_whenever_more_are_needed():
    for demand in (0.5, 7.0, 99.9, 105.0, 333.0, 1234.5):
        for r in (1, 2, 5):
            t1 = 50.0
            if over_capacity(demand, r, t1, 1.05):
                assert r + replicas_to_add(demand, r, t1, 1.05) == replicas_needed(demand, t1, 1.05)


def test_apply_bounds_clips_a_target_to_floor_and_cap():
    """Rule (Ray Serve "apply bounds"): the floor is min_replicas, the cap max_replicas."""
    assert apply_bounds(5, lo=1, hi=3) == 3
    assert apply_bounds(0, lo=2) == 2
    assert apply_bounds(7) == 7
    assert apply_bounds(4, lo=5, hi=3) == 5  # the floor wins
    assert apply_bounds(-2) == 0
    assert apply_bounds(2, hi=2) == 2
