"""Collector state: dedupe, late results, staleness and forgetting, on a clock the test moves."""

import pytest

from courierwatch.collector.state import State
from courierwatch.v1 import courierwatch_pb2 as pb


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def result(seq: int, started: float, outcome=pb.OUTCOME_OK, target="1-courier.push.apple.com"):
    r = pb.Result(seq=seq, target=target, port=5223, check="tls", group="push",
                  outcome=outcome, interval_seconds=30)
    r.started_at.FromNanoseconds(int(started * 1e9))
    return r


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def state(clock):
    return State(stale_intervals=3, min_stale=60, forget_after=3600, clock=clock)


def hello(site="ams", probe="pi-1"):
    return pb.Hello(site=site, probe_id=probe, software_version="1.0", config_digest="abc")


def test_replayed_results_are_not_counted_twice(state, clock):
    probe = state.connect(hello())
    assert state.apply(probe, [result(1, clock.now), result(2, clock.now)]).through == 2
    change = state.apply(probe, [result(2, clock.now), result(3, clock.now)])
    assert (change.through, change.applied, change.duplicates) == (3, 1, 1)
    assert probe.applied == 3
    assert probe.duplicates == 1
    assert sum(probe.counts.values()) == 3


def test_a_reconnect_keeps_the_sequence(state, clock):
    probe = state.connect(hello())
    state.apply(probe, [result(5, clock.now)])
    state.disconnect(probe)
    again = state.connect(hello())
    assert again is probe
    assert again.applied_through == 5


def test_a_late_result_counts_but_does_not_replace_the_current_one(state, clock):
    probe = state.connect(hello())
    state.apply(probe, [result(1, clock.now, pb.OUTCOME_OK)])
    state.apply(probe, [result(2, clock.now - 20, pb.OUTCOME_REFUSED)])
    (current,) = state.fresh(probe)
    assert current.outcome == pb.OUTCOME_OK
    key = ("1-courier.push.apple.com", 5223, "tls", "push", "", "")
    assert probe.counts[(key, pb.OUTCOME_REFUSED)] == 1


def test_gauges_go_stale_after_three_intervals_and_never_before_min_stale(state, clock):
    probe = state.connect(hello())
    state.apply(probe, [result(1, clock.now)])
    clock.now += 89  # 3 x 30 s interval = 90 s
    assert len(list(state.fresh(probe))) == 1
    clock.now += 2
    assert list(state.fresh(probe)) == []


def test_min_stale_protects_fast_checks(clock):
    state = State(stale_intervals=3, min_stale=60, forget_after=3600, clock=clock)
    probe = state.connect(hello())
    fast = result(1, clock.now)
    fast.interval_seconds = 1
    state.apply(probe, [fast])
    clock.now += 59
    assert len(list(state.fresh(probe))) == 1


def test_a_disconnected_probe_is_down_at_once_and_forgotten_later(state, clock):
    probe = state.connect(hello())
    state.apply(probe, [result(1, clock.now)])
    assert state.is_up(probe)
    state.disconnect(probe)
    assert not state.is_up(probe)
    assert state.forget_silent() == []
    clock.now += 3601
    assert state.forget_silent() == [("ams", "pi-1")]
    assert state.probes() == []


def test_two_sites_are_kept_apart(state, clock):
    a = state.connect(hello(site="ams"))
    b = state.connect(hello(site="nyc"))
    state.apply(a, [result(10, clock.now)])
    state.apply(b, [result(1, clock.now)])
    assert (a.applied, b.applied) == (1, 1)


def courier(seq, started, pop, outcome=pb.OUTCOME_OK, port=5223):
    r = result(seq, started, outcome, target="courier.push.apple.com")
    r.check, r.port, r.pop = "courier", port, pop
    return r


def test_a_pop_move_is_counted_once_and_timed(state, clock):
    probe = state.connect(hello())
    state.apply(probe, [courier(1, clock.now, "eu-central"), courier(2, clock.now, "eu-central")])
    assert (probe.pop, probe.pop_changes) == ("eu-central", 0)
    clock.now += 30
    state.apply(probe, [courier(3, clock.now, "eu-nw")])
    assert (probe.pop, probe.pop_changes, probe.pop_changed_at) == ("eu-nw", 1, clock.now)


def test_a_late_result_does_not_move_the_pop_back(state, clock):
    probe = state.connect(hello())
    state.apply(probe, [courier(1, clock.now, "eu-nw")])
    state.apply(probe, [courier(2, clock.now - 60, "eu-central")])
    assert (probe.pop, probe.pop_changes) == ("eu-nw", 0)


def test_health_is_kept_per_probe(state):
    probe = state.connect(hello())
    state.report_health(probe, pb.Health(spool_depth=7, dropped_total=2))
    assert probe.health.spool_depth == 7
