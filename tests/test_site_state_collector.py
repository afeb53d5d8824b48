"""The collector's site state: common/sitestate applied to each probe's fresh results, cached
between scrapes, offline past its staleness; the loss and jitter windows (collector/quality.py)
with their hysteresis; and what /metrics says of both."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from courierwatch.collector import quality
from courierwatch.collector.exposition import Exposition
from courierwatch.collector.quality import LossThresholds, PathQuality
from courierwatch.collector.state import State
from courierwatch.common import sitestate
from courierwatch.v1 import courierwatch_pb2 as pb

NOW = 1_700_000_000.0
OK, REFUSED, TIMEOUT = pb.OUTCOME_OK, pb.OUTCOME_REFUSED, pb.OUTCOME_TIMEOUT
LIMITS = LossThresholds()


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def connect(outcome=OK, seconds: float | None = 0.02, target="courier.push.apple.com",
            port=5223, check="courier", family="ipv4", via="direct", group="push",
            ) -> pb.Result:  # fmt: skip
    result = pb.Result(target=target, port=port, check=check, group=group,
                       outcome=outcome, address_family=family, via=via,
                       interval_seconds=30)  # fmt: skip
    if seconds is not None:
        result.phases.connect = seconds
    result.started_at.FromSeconds(int(NOW))
    return result


def feed(path: PathQuality, pattern: str, **kw) -> list[str]:
    """Feeds one result per character ('.' a good connect, 'x' a refused one, 'r' a SYN
    retransmission); the finding after each."""
    findings = []
    for mark in pattern:
        if mark == "x":
            path.add(connect(REFUSED, None, **kw), LIMITS)
        else:
            path.add(connect(seconds=1.02 if mark == "r" else 0.02, **kw), LIMITS)
        findings.append(path.finding())
    return findings


def test_one_failure_is_never_loss():
    assert not any(feed(PathQuality(), "." * 19 + "x" + "." * 40))
    assert not any(feed(PathQuality(), "x" + "." * 25 + "x" + "." * 25))  # never 2 in 20
    assert not any(feed(PathQuality(), ".x"))  # 1 of 2 is 50 %, but one failure


def test_loss_enters_at_ten_percent_and_leaves_only_below_three():
    path = PathQuality()
    found = feed(path, "." * 18 + "xx")  # 2 of 20: 10 %
    assert not any(found[:-1]) and found[-1] == (
        "5223: 10% of 20 recent connects failed or needed a SYN retransmission"
    )
    # 1 of 20 (5 %): between the thresholds, so it holds; 0 of 20: it ends.
    found = feed(path, "." * 20)
    assert all(found[:-1]) and found[-1] == ""
    assert path.figures() == [(5223, 0.0, 0.0)]


def test_retransmission_sized_connects_are_loss_not_jitter():
    path = PathQuality()
    found = feed(path, "." * 17 + "rrr")
    assert found[-1].startswith("5223: 15% of 20")
    ((port, ratio, jitter),) = path.figures()
    assert (port, ratio, jitter) == (5223, 0.15, 0.0)  # the 20 ms connects do not vary


def test_a_blocked_host_on_a_port_is_not_loss_on_that_port():
    path = PathQuality()
    feed(path, "x" * 20, target="mdm.vendor.example", port=443, check="tcp")
    feed(path, "." * 20, target="courier.push.apple.com", port=443)
    assert path.finding() == ""
    assert path.figures() == [(443, 0.0, 0.0)]
    blocked = PathQuality()
    assert not any(feed(blocked, "x" * 20))
    assert blocked.figures() == []  # nothing connects: no loss figure at all


def test_failures_before_the_connect_and_proxied_connects_say_nothing_about_the_path():
    path = PathQuality()
    for _ in range(10):
        path.add(connect(pb.OUTCOME_DNS_TIMEOUT, None), LIMITS)
        path.add(connect(REFUSED, None, via="proxy"), LIMITS)
        path.add(connect(TIMEOUT, 0.02), LIMITS)  # connected, then timed out: not loss
        path.add(connect(seconds=0.02, check="ntp"), LIMITS)
    assert path.figures() == [(5223, 0.0, 0.0)]


def test_jitter_is_the_mean_absolute_difference_of_consecutive_connects_of_a_series():
    path = PathQuality()
    for seconds in (0.010, 0.030, 0.020, 0.050):  # differences 20, 10, 30 ms
        path.add(connect(seconds=seconds), LIMITS)
        # Another series, steady at 500 ms: differences 0, 0, 0 (never 490 ms across series).
        path.add(connect(seconds=0.5, family="ipv6"), LIMITS)
    ((_, _, jitter),) = path.figures()
    assert jitter == pytest.approx(0.010)


def test_thresholds_are_checked():
    with pytest.raises(ValueError, match="leave <= enter"):
        LossThresholds(enter=0.02, leave=0.05)
    assert LossThresholds(window=20, enter=0.10, leave=0.03) == quality.DEFAULT_LOSS


# --- In the collector's state ------------------------------------------------------------------


def fleet(clock: Clock) -> tuple[State, object]:
    state = State(clock=clock)
    hello = pb.Hello(site="ams", probe_id="pi-1")
    hello.groups.add(id="push", title="Push", critical=True)
    probe = state.connect(hello)
    return state, probe


def apply(state: State, probe, *results: pb.Result) -> None:
    for result in results:
        result.seq = probe.applied_through + 1
        state.apply(probe, [result])


def test_the_site_state_is_cached_until_something_it_reads_changes(monkeypatch):
    calls = []
    real = sitestate.assess
    monkeypatch.setattr(sitestate, "assess",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))  # fmt: skip
    state, probe = fleet(Clock())
    apply(state, probe, connect(), connect(port=443))
    assert state.site_state(probe).state == "ok"
    Exposition(state).render()
    assert state.site_state(probe).state == "ok" and len(calls) == 1  # nothing changed
    apply(state, probe, connect(REFUSED, None))  # 5223's latest result is another one
    assert [c.cause for c in state.site_state(probe).causes] == ["fallback_only"]
    assert len(calls) == 2
    state.connect(pb.Hello(site="ams", probe_id="pi-1"))  # new group facts
    state.site_state(probe)
    assert len(calls) == 3


def test_a_probe_without_a_stream_past_its_staleness_is_offline():
    clock = Clock()
    state, probe = fleet(clock)
    apply(state, probe, connect(), connect(port=443))
    state.disconnect(probe)
    assert state.site_state(probe).state == "ok"  # a reconnect is usually under way
    clock.now += state.min_stale + 1
    offline = state.site_state(probe)
    assert (offline.state, [c.cause for c in offline.causes]) == ("probe_offline", ["probe_down"])


def samples(text: bytes, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
        if s.name == name
    }


def test_metrics_show_the_state_one_hot_each_cause_and_loss_and_jitter():
    state, probe = fleet(Clock())
    for n in range(20):
        apply(state, probe, connect(REFUSED, None) if n in (3, 11) else connect(seconds=0.02),
              connect(port=443, seconds=0.03 if n % 2 else 0.01))  # fmt: skip
    ntp = connect(pb.OUTCOME_CLOCK_SKEW, None, target="time.apple.com", port=123, check="ntp",
                  group="device_setup")  # fmt: skip
    ntp.ntp.offset_seconds, ntp.detail = 5.0, "clock off by +5.000 s"
    apply(state, probe, ntp)
    text = Exposition(state).render()
    site = {"probe": "pi-1", "site": "ams"}
    states = samples(text, "courierwatch_site_state")
    assert {dict(k)["state"]: v for k, v in states.items()} == {
        "ok": 0, "degraded": 1, "filtered": 0, "intercepted": 0, "unreachable": 0,
        "probe_offline": 0,
    }  # fmt: skip
    causes = {(dict(k)["cause"], dict(k)["group"])
              for k in samples(text, "courierwatch_site_cause")}  # fmt: skip
    assert causes == {("clock_skew", "device_setup"), ("loss", "")}
    loss = samples(text, "courierwatch_path_loss_ratio")
    assert loss == {tuple(sorted({**site, "port": "5223"}.items())): 0.1,
                    tuple(sorted({**site, "port": "443"}.items())): 0.0}  # fmt: skip
    jitter = samples(text, "courierwatch_path_jitter_seconds")
    assert jitter[tuple(sorted({**site, "port": "443"}.items()))] == pytest.approx(0.02)
    # The offset of a skewed clock is exported: it is what the ClockSkew alert reads.
    (offset,) = samples(text, "courierwatch_ntp_offset_seconds").values()
    assert offset == 5.0
    detail = state.site_state(probe).causes[1]
    assert detail.cause == "loss" and detail.detail.startswith("5223: 10% of 20 recent connects")


def test_a_result_that_goes_stale_leaves_the_site_state_without_a_new_result():
    clock = Clock()
    state, probe = fleet(clock)
    failing = connect(REFUSED, None, target="mdm.example.net", port=443, check="tcp",
                      group="mdm_vendor")  # fmt: skip
    failing.interval_seconds = 1  # fresh for min_stale (60 s); the couriers for 90 s
    apply(state, probe, connect(), connect(port=443), failing)
    assert [c.cause for c in state.site_state(probe).causes] == ["group_down"]
    clock.now += 70
    assert state.site_state(probe).causes == ()
