"""Through the site's HTTP proxy with CONNECT: working, refused (403), wanting credentials
(407, which apsd cannot give), unreachable; TLS findings still apply inside the tunnel."""

import dataclasses

import pytest

from courierwatch.probe.net.proxy import ProxySettings
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import COURIER_ALPN, COURIER_SNI, INSPECTION_ORG, ProxyMode
from fakeapple.probing import (
    check,
    check_context,
)


@pytest.fixture
def ctx(apple):
    return check_context(apple, proxy=True)


def courier(port):
    return {
        "host": COURIER_SNI,
        "port": port,
        "check": "courier",
        "numbers": (2,),
        "alpn": (COURIER_ALPN,),
        "expect_issuer": ("Fake Apple",),
        "via": "proxy",
    }


async def test_courier_through_the_proxy(apple, ctx):
    r = await check(ctx, **courier(apple.courier_port))
    assert r.outcome == pb.OUTCOME_OK, r.detail
    assert (r.via, r.address_family, r.dialled_host) == ("proxy", "", "2-courier.push.apple.com")
    assert apple.proxy.requests == [f"2-courier.push.apple.com:{apple.courier_port}"]
    # The proxy resolves: the probe asks no DNS for the courier, and meets the proxy.
    assert apple.dns.query_count("2-courier.push.apple.com") == 0
    assert not r.phases.HasField("dns") and r.phases.connect > 0 and r.phases.tls > 0
    assert r.peer_address == apple.host and not r.addresses


async def test_https_through_the_proxy(apple, ctx):
    r = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="http", via="proxy")
    assert (r.outcome, r.http.status) == (pb.OUTCOME_OK, 200), r.detail
    assert apple.https.requests["/"] == 1


@pytest.mark.parametrize(
    ("mode", "outcome", "words"),
    [
        (ProxyMode.DENY, pb.OUTCOME_PROXY_DENIED, "refused CONNECT"),
        (ProxyMode.AUTH, pb.OUTCOME_PROXY_AUTH_REQUIRED, "apsd cannot use an authenticated"),
    ],
)
async def test_proxy_refusals(apple, ctx, mode, outcome, words):
    apple.proxy.mode = mode
    r = await check(ctx, **courier(apple.courier_port))
    assert r.outcome == outcome, r.detail
    assert words in r.detail and f"proxy {apple.host}:{apple.proxy_port}" in r.detail
    assert apple.courier.handshakes == 0


async def test_unreachable_proxy_says_so(apple, ctx):
    ctx = dataclasses.replace(ctx, proxy=ProxySettings(apple.host, apple.closed_port))
    r = await check(ctx, **courier(apple.courier_port))
    assert (r.outcome, r.detail) == (
        pb.OUTCOME_REFUSED,
        f"proxy {apple.host}:{apple.closed_port}: connection refused",
    )


async def test_silent_proxy_times_out_as_the_proxy(apple, ctx):
    ctx = dataclasses.replace(ctx, proxy=ProxySettings(apple.host, apple.silent_port))
    r = await check(ctx, **courier(apple.courier_port), timeout=0.3)
    assert (r.outcome, r.detail) == (pb.OUTCOME_TIMEOUT, "the proxy did not answer in time")


async def test_inspection_inside_the_tunnel_is_still_named(apple):
    ctx = check_context(apple, proxy=True, site_anchors=(str(apple.inspection_ca_pem_path),))
    r = await check(ctx, **courier(apple.intercepting_port))
    assert r.outcome == pb.OUTCOME_TLS_INTERCEPTED, r.detail
    assert INSPECTION_ORG in r.tls.issuer and r.tls.verified_by == "site"
    assert len(apple.proxy.requests) == 2  # the second look went through the proxy too
