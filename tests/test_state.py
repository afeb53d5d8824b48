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


DAY = 86400.0
KEY = ("1-courier.push.apple.com", 5223, "tls", "push", "", "")


def test_the_latest_result_is_the_highest_number_whatever_its_clock_says(state, clock):
    """The issue's case: the probe's clock stepped two days ahead for a few seconds and back;
    the results after the step back (started "earlier") were never shown."""
    probe = state.connect(hello())
    state.apply(probe, [result(1, clock.now, pb.OUTCOME_OK)])
    state.apply(probe, [result(2, clock.now + 2 * DAY, pb.OUTCOME_OK)])
    clock.now += 5
    state.apply(probe, [result(3, clock.now, pb.OUTCOME_REFUSED)])
    (current,) = state.fresh(probe)
    assert current.seq == 3 and current.outcome == pb.OUTCOME_REFUSED
    assert probe.counts[(KEY, pb.OUTCOME_OK)] == 2
    assert probe.counts[(KEY, pb.OUTCOME_REFUSED)] == 1


@pytest.mark.parametrize("step", [2 * DAY, -2 * DAY], ids=["ahead", "behind"])
def test_freshness_is_judged_by_arrival_not_by_the_probes_clock(state, clock, step):
    probe = state.connect(hello())
    state.apply(probe, [result(1, clock.now + step)])
    assert len(list(state.fresh(probe))) == 1  # a clock behind does not make it stale
    clock.now += 91  # 3 x 30 s after it arrived
    assert list(state.fresh(probe)) == []  # a clock ahead does not keep it fresh


def test_the_probes_clock_offset_comes_from_its_health(state, clock):
    probe = state.connect(hello())
    assert probe.clock_offset is None
    beat = pb.Health()
    beat.sent_at.FromNanoseconds(int((clock.now + 2 * DAY) * 1e9))
    state.report_health(probe, beat)
    assert probe.clock_offset == pytest.approx(2 * DAY)
    beat.sent_at.FromNanoseconds(int((clock.now - 0.25) * 1e9))
    state.report_health(probe, beat)
    assert probe.clock_offset == pytest.approx(-0.25)


def test_what_a_probe_holds_in_memory_is_accounted(state, clock):
    probe = state.connect(hello())
    first = result(1, clock.now)
    state.apply(probe, [first])
    assert probe.state_bytes == first.ByteSize()
    bigger = result(2, clock.now)
    bigger.detail = "x" * 500
    state.apply(probe, [bigger, result(3, clock.now, target="other")])
    assert probe.state_bytes == sum(r.ByteSize() for r in probe.latest.values())


def test_a_duplicate_identity_is_shown_while_it_keeps_trying(state, clock):
    probe = state.connect(hello(), peer="ipv4:10.0.0.1:4000")
    assert state.live(probe.key) is probe and not state.duplicated(probe)
    state.note_duplicate(probe, "ipv4:10.0.0.2:5000")
    assert state.duplicated(probe) and probe.duplicate_peer == "ipv4:10.0.0.2:5000"
    clock.now += 91
    assert not state.duplicated(probe)
    state.disconnect(probe)
    assert state.live(probe.key) is None


def test_gauges_go_stale_after_three_intervals_and_never_before_min_stale(state, clock):
    probe = state.connect(hello())
    state.apply(probe, [result(1, clock.now)])
    clock.now += 89  # 3 x 30 s interval = 90 s
    assert len(list(state.fresh(probe))) == 1
    clock.now += 2
    assert list(state.fresh(probe)) == []


def test_the_fresh_set_is_kept_until_a_result_ages_out_or_a_batch_comes(state, clock):
    """State keeps each probe's fresh set (status page and scrapes of big fleets read it
    often); it must still age, take a batch, follow a new staleness setting and a clock
    stepped back."""
    probe = state.connect(hello())
    slow = result(2, clock.now, target="2-courier.push.apple.com")
    slow.interval_seconds = 600
    state.apply(probe, [result(1, clock.now), slow])
    fresh = state.fresh(probe)
    assert len(fresh) == 2
    clock.now += 89
    assert state.fresh(probe) is fresh  # nothing aged out: the same, not read again
    clock.now += 2
    assert [r.seq for r in state.fresh(probe)] == [2]  # the 30 s check aged out
    state.apply(probe, [result(3, clock.now)])
    assert sorted(r.seq for r in state.fresh(probe)) == [2, 3]
    state.stale_intervals = 1  # a reload: 600 s for the slow one, 60 s for the other
    clock.now += 61
    assert [r.seq for r in state.fresh(probe)] == [2]
    clock.now -= 61  # the collector's clock stepped back: judged as before
    assert sorted(r.seq for r in state.fresh(probe)) == [2, 3]


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


def test_a_clock_step_does_not_hide_a_pop_move(state, clock):
    probe = state.connect(hello())
    state.apply(probe, [courier(1, clock.now + 2 * DAY, "eu-nw")])
    state.apply(probe, [courier(2, clock.now, "eu-central")])
    assert (probe.pop, probe.pop_changes) == ("eu-central", 1)


def test_health_is_kept_per_probe(state):
    probe = state.connect(hello())
    state.report_health(probe, pb.Health(spool_depth=7, dropped_total=2))
    assert probe.health.spool_depth == 7
