"""Through the site's HTTP proxy: CONNECT for TLS, absolute-form requests for plain HTTP; working,
refused (403), wanting credentials (407, which apsd cannot give), unreachable; TLS findings still
apply inside the tunnel, and the origin's own status is not the proxy's."""

import asyncio
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


# A proxy as real ones are set up: CONNECT to the TLS ports only (here the fake's TLS servers).
@pytest.fixture
def strict(apple):
    apple.proxy.connect_ports = {apple.https_port, apple.courier_port, apple.intercepting_port}
    return apple.proxy


def plain(apple, path="/", **fields):
    return {"host": "captive.apple.com", "port": apple.http_port, "check": "http", "tls": False,
            "path": path, "via": "proxy", **fields}  # fmt: skip


async def test_plain_http_is_asked_of_the_proxy_in_absolute_form(apple, ctx, strict):
    r = await check(ctx, **plain(apple))
    assert (r.outcome, r.http.status) == (pb.OUTCOME_OK, 200), r.detail
    assert strict.requests == [f"http://captive.apple.com:{apple.http_port}/"]  # no CONNECT
    assert apple.http.requests["/"] == 1
    assert r.peer_address == apple.host and r.phases.connect > 0 and r.phases.first_byte > 0
    # HTTPS still goes through a tunnel, which the proxy allows to the TLS port.
    r = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="http", via="proxy")
    assert (r.outcome, strict.requests[-1]) == (pb.OUTCOME_OK, f"gdmf.apple.com:{apple.https_port}")


async def test_the_origins_own_status_is_no_proxy_finding(apple, ctx, strict):
    r = await check(ctx, **plain(apple, "/status/403"))
    assert (r.outcome, r.http.status) == (pb.OUTCOME_OK, 403), r.detail  # forwarded, with Via
    r = await check(ctx, **plain(apple, "/status/404", expect_status=(200,)))
    assert (r.outcome, r.detail) == (pb.OUTCOME_HTTP_BAD_STATUS, "HTTP status 404")


@pytest.mark.parametrize(
    ("mode", "outcome", "words"),
    [
        (ProxyMode.DENY, pb.OUTCOME_PROXY_DENIED, "refused GET http://captive.apple.com:{port}/: "
         "403 Forbidden"),
        (ProxyMode.AUTH, pb.OUTCOME_PROXY_AUTH_REQUIRED, "wants credentials (407)"),
    ],
)  # fmt: skip
async def test_the_proxys_own_refusal_of_plain_http(apple, ctx, strict, mode, outcome, words):
    strict.mode = mode
    r = await check(ctx, **plain(apple))
    assert r.outcome == outcome, r.detail
    assert words.format(port=apple.http_port) in r.detail and "CONNECT" not in r.detail
    assert apple.http.requests["/"] == 0 and not r.HasField("http")


async def test_connect_to_a_port_the_proxy_does_not_allow_is_denied(apple, ctx, strict):
    r = await check(ctx, host="silent.apple.com", port=apple.silent_port, check="tcp", via="proxy")
    assert (r.outcome, r.detail) == (
        pb.OUTCOME_PROXY_DENIED,
        f"proxy {apple.host}:{apple.proxy_port} refused CONNECT silent.apple.com:"
        f"{apple.silent_port}: 403 Forbidden",
    )


async def test_the_fake_proxy_refuses_what_a_real_one_refuses(apple):
    async def ask(request):
        reader, writer = await asyncio.open_connection(apple.host, apple.proxy_port)
        writer.write(request)
        answer = await reader.readline()
        writer.close()
        await writer.wait_closed()
        return answer

    assert (await ask(b"GET / HTTP/1.1\r\nHost: captive.apple.com\r\n\r\n")).startswith(
        b"HTTP/1.1 400"
    )  # origin form is for servers
    assert (await ask(b"DELETE http://captive.apple.com/ HTTP/1.1\r\n\r\n")).startswith(
        b"HTTP/1.1 405"
    )
