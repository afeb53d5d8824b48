"""Exposition.render(), the hand-written text format /metrics serves, against prometheus_client's
rendering of the same table and state (reference_exposition): the same families, series and
values; and byte for byte against golden files (tests/data/*.golden.txt)."""

import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from reference_exposition import render as reference

from courierwatch.collector.exposition import Exposition
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


@pytest.mark.integration
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


DATA = Path(__file__).parent / "data"


def golden_state(clock):
    """A fixed state with a series in every family: TLS facts, NTP, POPs and a POP change,
    the proxy path, both address families, probe health, group facts and refusals."""
    state = State(clock=clock)
    hello = pb.Hello(site="ams", probe_id="pi-1", software_version="2.0", config_digest="d2")
    hello.groups.add(id="push", title="Push notifications (APNs)", critical=True)
    hello.groups.add(id="icloud", title="iCloud", critical=False)
    hello.groups.add(id="mdm_vendor", title="mdm_vendor", critical=True)
    hello.families[:] = ["ipv4", "ipv6"]
    hello.families_reason = "IPv6 too: global address 2001:db8::5 on eth0 with a default route"
    probe = state.connect(hello)
    batch = []
    for seq, (family, port, pop) in enumerate(
        [("ipv4", 5223, "eu-central"), ("ipv6", 5223, "eu-central"), ("ipv4", 443, "eu-central")],
        1,
    ):
        courier = result(seq, "1-courier.push.apple.com", port, "courier", "push",
                         address_family=family, via="direct", pop=pop)  # fmt: skip
        courier.phases.dns, courier.phases.connect, courier.phases.total = 0.001, 0.012, 0.02
        batch.append(courier)
    proxied = result(4, "1-courier.push.apple.com", 443, "courier", "push",
                     pb.OUTCOME_PROXY_AUTH_REQUIRED, address_family="ipv4",
                     via="proxy")  # fmt: skip
    proxied.phases.connect = 0.004
    tls = result(5, "gdmf.apple.com", 443, "tls", "device_management", pb.OUTCOME_TLS_INTERCEPTED,
                 address_family="ipv4", via="direct")  # fmt: skip
    tls.phases.dns, tls.phases.connect, tls.phases.tls = 0.002, 0.01, 0.03
    tls.tls.not_after.FromSeconds(1_800_000_000)
    tls.tls.issuer, tls.tls.verified_by = "CN=Corp Inspection CA", "site"
    ntp = result(6, "time.apple.com", 123, "ntp", "ntp", address_family="ipv6", via="direct")
    ntp.ntp.offset_seconds, ntp.phases.first_byte = 0.0125, 0.008
    icloud = result(7, "www.icloud.com", 443, "http", "icloud", pb.OUTCOME_HTTP_BAD_STATUS,
                    address_family="ipv4", via="direct")  # fmt: skip
    vendor = result(8, "mdm.vendor.example", 443, "tcp", "mdm_vendor", pb.OUTCOME_REFUSED,
                    address_family="ipv4", via="direct")  # fmt: skip
    vendor.phases.connect = 0.0005
    state.apply(probe, [*batch, proxied, tls, ntp, icloud, vendor])
    clock.now += 10
    moved = result(9, "1-courier.push.apple.com", 5223, "courier", "push", address_family="ipv4",
                   via="direct", pop="eu-north")  # fmt: skip
    moved.started_at.FromSeconds(int(clock.now) - 1)
    moved.phases.connect = 0.015
    state.apply(probe, [moved, batch[0]])  # a replay: counted as a duplicate
    state.report_health(probe, pb.Health(spool_depth=12, spool_bytes=4096, dropped_total=3,
                                         quarantined_total=2, dropped_disk_full_total=5,
                                         loop_lag_seconds=0.125,
                                         oldest_pending_seconds=2.5))  # fmt: skip
    # An older probe, with no group facts in its Hello, down now.
    old = state.connect(pb.Hello(site="ber", probe_id="pi-2", software_version="1.9",
                                 config_digest="d1"))  # fmt: skip
    state.apply(old, [result(1, "courier.push.apple.com", 5223, "courier", "push",
                             pb.OUTCOME_TIMEOUT, address_family="ipv4", via="direct")])  # fmt: skip
    state.disconnect(old)
    state.refused["unauthorized_site"] += 1
    state.refused["oversized"] += 4
    return state


@pytest.mark.parametrize(("build", "name"), [
    ("golden_state", "metrics.golden.txt"),
    ("rich_state", "metrics-escaped.golden.txt"),
])  # fmt: skip
def test_the_text_is_byte_identical_to_the_golden_file(build, name):
    """/metrics of a fixed state, byte for byte. After a deliberate change to the exposition,
    write the files anew with COURIERWATCH_WRITE_GOLDEN=1 and review their diff."""
    make = globals()[build]
    text = Exposition(make(Clock())).render()
    golden = DATA / name
    if os.environ.get("COURIERWATCH_WRITE_GOLDEN"):
        golden.write_bytes(text)
    assert text == golden.read_bytes()
    assert families(text) == families(reference(make(Clock())))
