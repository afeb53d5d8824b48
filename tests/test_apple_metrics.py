"""Each Apple finding, measured by real checks against the little Apple, carried through the
collector's state and read back from /metrics over HTTP, as the NOC's Prometheus sees it."""

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from courierwatch.collector.state import State
from courierwatch.collector.web import build_app
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import (
    COURIER_ALPN,
    COURIER_POP,
    COURIER_SNI,
    INSPECTION_ORG,
    NTP_NAME,
    SINKHOLE_NAME,
    NtpMode,
    ProxyMode,
)
from fakeapple.probing import check, check_context
from processes import key, parse

SITE, PROBE = "ams", "pi-ams-1"


def courier(port, **fields):
    return {"host": COURIER_SNI, "port": port, "check": "courier", "group": "push",
            "numbers": (1, 2, 3), "alpn": (COURIER_ALPN,), "expect_issuer": ("Fake Apple",),
            **fields}


def as_port(result: pb.Result, port: int) -> pb.Result:
    """The fake cannot listen on 5223/443 without root: its ports stand in for them."""
    result.port = port
    return result


class Collector:
    """The collector's state behind its real HTTP app, fed results as a probe stream would."""

    def __init__(self) -> None:
        self.state = State()
        self.probe = self.state.connect(pb.Hello(site=SITE, probe_id=PROBE))
        self.seq = 0

    def apply(self, *results: pb.Result) -> None:
        for result in results:
            self.seq += 1
            result.seq = self.seq
        self.state.apply(self.probe, results)

    async def metrics(self) -> dict:
        async with (
            TestServer(build_app(self.state), host="127.0.0.1") as server,
            aiohttp.ClientSession() as session,
            session.get(server.make_url("/metrics")) as response,
        ):
            return parse(await response.text())


def series(name, **labels):
    return key(name, site=SITE, probe=PROBE, **labels)


@pytest.fixture
def collector():
    return Collector()


async def test_5223_blocked_with_443_open_is_degraded_and_a_pop_move_is_counted(
    apple, collector
):
    ctx = check_context(apple)
    blocked = as_port(await check(ctx, **courier(apple.closed_port)), 5223)
    fallback = as_port(await check(ctx, **courier(apple.courier_port)), 443)
    collector.apply(blocked, fallback)
    samples = await collector.metrics()
    assert samples[series("courierwatch_courier_state", state="degraded")] == 1
    # Targets built here are not expanded per address family: no family label.
    labels = dict(target=COURIER_SNI, check="courier", group="push", via="direct",
                  pop=COURIER_POP)
    assert samples[series("courierwatch_check_outcome", port="5223", outcome="refused",
                          **labels)] == 1
    assert samples[series("courierwatch_check_success", port="443", **labels)] == 1
    assert samples[series("courierwatch_pop_info", pop=COURIER_POP)] == 1

    apple.move_couriers("apac-asia")
    collector.apply(as_port(await check(ctx, **courier(apple.courier_port)), 443))
    samples = await collector.metrics()
    assert samples[series("courierwatch_pop_info", pop="apac-asia")] == 1
    assert samples[series("courierwatch_pop_changes_total")] == 1
    assert series("courierwatch_pop_last_change_timestamp_seconds") in samples


async def test_dns_filtering_interception_and_missing_h2_have_their_own_outcomes(
    apple, collector
):
    ctx = check_context(apple)
    sinkholed = await check(ctx, host=SINKHOLE_NAME, port=443, check="tls", group="push",
                            addresses="apple")
    intercepted = await check(ctx, **courier(apple.intercepting_port))
    h1_only = await check(ctx, host="api.push.apple.com", port=apple.provider_h1_port,
                          check="tls", group="push_provider", alpn=("h2",), require_alpn="h2")
    collector.apply(sinkholed, intercepted, h1_only)
    samples = await collector.metrics()

    def outcome(result: pb.Result) -> str:
        found = [dict(labels)["outcome"] for name, labels in samples
                 if name == "courierwatch_check_outcome"
                 and dict(labels)["target"] == result.target
                 and dict(labels)["port"] == str(result.port)]
        assert len(found) == 1, found
        return found[0]

    assert outcome(sinkholed) == "dns_sinkhole"
    assert outcome(intercepted) == "tls_intercepted"
    assert outcome(h1_only) == "tls_alpn_mismatch"
    issuers = [dict(labels)["issuer"] for name, labels in samples
               if name == "courierwatch_tls_issuer_info"
               and dict(labels)["port"] == str(apple.intercepting_port)]
    assert len(issuers) == 1 and INSPECTION_ORG in issuers[0]  # the NOC sees who intercepts


@pytest.mark.parametrize(
    ("mode", "outcome"),
    [(ProxyMode.AUTH, "proxy_auth_required"), (ProxyMode.DENY, "proxy_denied")],
)
async def test_a_failing_proxy_path_beside_a_working_direct_one(apple, collector, mode, outcome):
    apple.proxy.mode = mode
    ctx = check_context(apple, proxy=True)
    direct = await check(ctx, **courier(apple.courier_port))
    proxied = await check(ctx, **courier(apple.courier_port, via="proxy"))
    collector.apply(direct, proxied)
    samples = await collector.metrics()
    labels = dict(target=COURIER_SNI, port=str(apple.courier_port), check="courier",
                  group="push")
    assert samples[series("courierwatch_check_success", via="direct", pop=COURIER_POP,
                          **labels)] == 1
    assert samples[series("courierwatch_check_outcome", via="proxy", outcome=outcome,
                          **labels)] == 1


async def test_ntp_offset_and_an_unanswered_server(apple, collector):
    ctx = check_context(apple)
    answered = await check(ctx, host=NTP_NAME, port=apple.ntp_port, check="ntp",
                           group="device_setup")
    apple.ntp.mode = NtpMode.SILENT
    apple.dns.add_a("time-ios.apple.com", apple.host)
    silent = await check(ctx, host="time-ios.apple.com", port=apple.ntp_port, check="ntp",
                         group="device_setup", timeout=0.3)
    collector.apply(answered, silent)
    samples = await collector.metrics()
    offset = samples[series("courierwatch_ntp_offset_seconds", target=NTP_NAME)]
    assert abs(offset - apple.ntp.offset) < 0.05
    assert samples[series("courierwatch_check_outcome", target="time-ios.apple.com",
                          port=str(apple.ntp_port), check="ntp", group="device_setup",
                          via="direct", outcome="timeout")] == 1
