"""Exposition.render(), the hand-written text format /metrics serves, against prometheus_client's
rendering of the same state (StateCollector): the same families, series and values."""

import math
import os
import shutil
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from courierwatch.collector.exposition import Exposition, StateCollector
from courierwatch.collector.state import State
from courierwatch.v1 import courierwatch_pb2 as pb

NOW = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def result(seq, target, port, check, group, outcome=pb.OUTCOME_OK, **fields):
    r = pb.Result(seq=seq, target=target, port=port, check=check, group=group, outcome=outcome,
                  interval_seconds=30, **fields)  # fmt: skip
    r.started_at.FromNanoseconds(int((NOW - 5) * 1e9) + seq * 123_456_789)
    return r


def rich_state(clock):
    """Every family, labels that need escaping, an unknown outcome, a stale check."""
    state = State(clock=clock)
    probe = state.connect(pb.Hello(site='ams "office"', probe_id="pi\\1", software_version="1.2",
                                   config_digest="d1"))  # fmt: skip
    tls = result(1, "1-courier.push.apple.com", 5223, "tls", "push", address_family="ipv4",
                 via="direct", pop="eu-central")  # fmt: skip
    tls.phases.dns, tls.phases.connect, tls.phases.tls, tls.phases.total = 0.0, 0.02, 0.05, 0.08
    tls.tls.not_after.FromSeconds(2_000_000_000)
    tls.tls.issuer, tls.tls.verified_by = 'CN=Apple "Public"\nCA', "expected"
    courier = result(2, "courier.push.apple.com", 443, "courier", "push", pop="eu-nw")
    courier.phases.total = 0.3
    refused = result(3, "gdmf.apple.com", 443, "http", "device_management", pb.OUTCOME_REFUSED)
    refused.phases.dns, refused.phases.total = 0.01, 0.011
    future = result(4, "x.apple.com", 80, "http", "g", outcome=999)  # from a newer probe
    ntp = result(5, "time.apple.com", 123, "ntp", "ntp")
    ntp.ntp.offset_seconds, ntp.phases.first_byte = -0.0042, 0.012
    stale = result(6, "old.apple.com", 443, "tcp", "g")
    stale.interval_seconds = 1
    stale.started_at.FromSeconds(int(NOW) - 3600)
    state.apply(probe, [tls, courier, refused, future, ntp, stale])
    state.apply(probe, [result(7, "gdmf.apple.com", 443, "http", "device_management",
                               pb.OUTCOME_TIMEOUT)])  # fmt: skip
    state.report_health(probe, pb.Health(spool_depth=3, spool_bytes=1_000_000_000,
                                         loop_lag_seconds=0.25))  # fmt: skip
    gone = state.connect(pb.Hello(site="nyc", probe_id="pi-9"))
    state.disconnect(gone)
    state.refused["label_too_long"] += 2
    return state


def families(text):
    return [
        (f.name, f.type, f.documentation,
         [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text.decode())
    ]  # fmt: skip


def reference(state):
    registry = CollectorRegistry()
    registry.register(StateCollector(state))
    return generate_latest(registry)


def test_the_same_families_series_and_values_as_prometheus_client():
    state = rich_state(Clock())
    text = Exposition(state).render()
    assert families(text) == families(reference(state))
    assert b'site="ams \\"office\\"",' in text and b'probe="pi\\\\1"' in text
    assert b"\\nCA" in text  # a newline in a label value, escaped


def test_what_changed_between_scrapes_is_rendered_anew():
    clock = Clock()
    state = rich_state(clock)
    exposition = Exposition(state)
    first = exposition.render()
    assert exposition.render() == first  # nothing changed: the same text
    probe = state.get(('ams "office"', "pi\\1"))
    moved = result(8, "1-courier.push.apple.com", 5223, "tls", "push", pb.OUTCOME_TLS_UNTRUSTED,
                   address_family="ipv4", via="direct", pop="us-east")  # fmt: skip
    moved.phases.tls = 0.5
    clock.now += 120  # the other checks go stale; this one has a new result
    moved.started_at.FromSeconds(int(clock.now))
    state.apply(probe, [moved])
    again = exposition.render()
    assert again != first
    assert families(again) == families(reference(state))
    assert families(again) == families(Exposition(state).render())  # no stale cache


def test_a_forgotten_probe_leaves_no_series():
    clock = Clock()
    state = rich_state(clock)
    exposition = Exposition(state)
    exposition.render()
    state.forget_after = 60
    clock.now += 3600
    state.forget_silent()
    text = exposition.render()
    assert b"nyc" not in text
    assert families(text) == families(reference(state))


def test_chunks_join_to_the_text():
    state = rich_state(Clock())
    chunks = list(Exposition(state).render_chunks())
    assert all(chunks) and b"".join(chunks) == Exposition(state).render()


def test_numbers_read_back_as_the_same_floats():
    state = State(clock=Clock())
    probe = state.connect(pb.Hello(site="s", probe_id="p"))
    r = result(1, "t", 1, "tcp", "g")
    r.phases.dns, r.phases.connect, r.phases.total = math.inf, float("nan"), 1e-9
    state.apply(probe, [r])
    by_phase = {labels["phase"]: value
                for name, _, _, samples in families(Exposition(state).render())
                for _, labels, value in samples
                if name == "courierwatch_check_duration_seconds"}  # fmt: skip
    assert by_phase["dns"] == math.inf and math.isnan(by_phase["connect"])
    assert by_phase["total"] == 1e-9


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"),
    reason="promtool comes with Debian's prometheus package (tests/run installs it as root)",
)
def test_promtool_accepts_it_without_warnings():
    text = Exposition(rich_state(Clock())).render()
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                          timeout=30)  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == b"" and lint.stderr.strip() == b"", lint.stdout + lint.stderr
