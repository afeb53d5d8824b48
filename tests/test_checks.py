"""Every check kind against the little Apple: the working case and each failure class."""

import pytest

from courierwatch.probe import catalog
from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.net.resolver import Resolver
from courierwatch.probe.runner import run_check
from courierwatch.probe.targets import Target
from courierwatch.probe.trust import TrustStore
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import COURIER_ALPN, COURIER_SNI


@pytest.fixture
def ctx(apple):
    return CheckContext(
        resolver=Resolver([apple.host], apple.dns_port),
        trust=TrustStore([apple.ca_pem_path], system=False),
        apple_ranges=catalog.apple().ranges,
        pop_pattern=catalog.apple().pop_pattern,
    )


async def check(ctx, **fields):
    fields.setdefault("timeout", 2.0)
    return await run_check(Target(**fields), ctx)


async def test_dns_records_the_cname_chain_and_addresses(apple, ctx):
    r = await check(ctx, host="1-courier.push.apple.com", port=53, check="dns")
    assert r.outcome == pb.OUTCOME_OK
    assert list(r.cname_chain) == [
        "1.courier-push-apple.com.akadns.net",
        "eu-central-courier-4.push-apple.com.akadns.net",
    ]
    assert list(r.addresses) == [apple.host]
    assert r.phases.HasField("dns") and not r.phases.HasField("connect")
    assert apple.dns.query_count("1-courier.push.apple.com", "A") == 1


@pytest.mark.parametrize(
    ("host", "outcome"),
    [
        ("nxdomain.apple.com", pb.OUTCOME_DNS_NXDOMAIN),
        ("servfail.apple.com", pb.OUTCOME_DNS_SERVFAIL),
        ("noaddress.apple.com", pb.OUTCOME_DNS_NO_ADDRESS),
        ("slowdns.apple.com", pb.OUTCOME_DNS_TIMEOUT),
    ],
)
async def test_dns_failure_classes(ctx, host, outcome):
    r = await check(ctx, host=host, port=443, check="tcp", timeout=0.5)
    assert r.outcome == outcome, r.detail
    assert not r.phases.HasField("connect")
    assert r.phases.total < 2


async def test_tcp_connects_and_times_the_connect(apple, ctx):
    r = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="tcp")
    assert r.outcome == pb.OUTCOME_OK
    assert r.peer_address == apple.host
    assert 0 < r.phases.connect < r.phases.total


async def test_tcp_refused(apple, ctx):
    r = await check(ctx, host="gdmf.apple.com", port=apple.closed_port, check="tcp")
    assert r.outcome == pb.OUTCOME_REFUSED


async def test_courier_tls_as_a_device_does_it(apple, ctx):
    r = await check(ctx, host="2-courier.push.apple.com", port=apple.courier_port, check="tls",
                    sni=COURIER_SNI, alpn=(COURIER_ALPN,))
    assert r.outcome == pb.OUTCOME_OK, r.detail
    assert r.tls.verified
    assert r.tls.alpn == COURIER_ALPN
    assert r.tls.version in {"TLSv1.2", "TLSv1.3"}
    assert "courier.push.apple.com" in r.tls.leaf_subject
    assert "Fake Apple" in r.tls.issuer
    assert r.tls.not_after.seconds > 0
    assert r.phases.tls > 0
    assert COURIER_SNI in apple.courier.server_names


async def test_tls_untrusted_still_names_the_presented_issuer(apple, ctx):
    r = await check(ctx, host="untrusted.apple.com", port=apple.untrusted_port, check="tls")
    assert r.outcome == pb.OUTCOME_TLS_UNTRUSTED, r.detail
    assert not r.tls.verified
    assert r.tls.issuer and "Fake Apple" not in r.tls.issuer
    assert "untrusted.apple.com" in r.tls.leaf_subject


async def test_tls_name_mismatch(apple, ctx):
    r = await check(ctx, host="mismatch.apple.com", port=apple.mismatch_port, check="tls")
    assert r.outcome == pb.OUTCOME_TLS_NAME_MISMATCH, r.detail


async def test_tls_expired_is_untrusted(apple, ctx):
    r = await check(ctx, host="expired.apple.com", port=apple.expired_port, check="tls")
    assert r.outcome == pb.OUTCOME_TLS_UNTRUSTED
    assert "expired" in r.detail


async def test_tls_handshake_timeout(apple, ctx):
    r = await check(ctx, host="silent.apple.com", port=apple.silent_port, check="tls",
                    timeout=0.3)
    assert r.outcome == pb.OUTCOME_TIMEOUT
    assert r.phases.HasField("connect") and not r.phases.HasField("tls")


async def test_https_records_status_and_first_byte(apple, ctx):
    r = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="http")
    assert r.outcome == pb.OUTCOME_OK, r.detail
    assert r.http.status == 200
    for phase in ("dns", "connect", "tls", "first_byte", "total"):
        assert r.phases.HasField(phase), phase
    assert apple.https.requests["/"] == 1


async def test_plain_http(apple, ctx):
    r = await check(ctx, host="captive.apple.com", port=apple.http_port, check="http", tls=False)
    assert r.outcome == pb.OUTCOME_OK, r.detail
    assert r.http.status == 200
    assert not r.phases.HasField("tls")


async def test_http_bad_status(apple, ctx):
    r = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="http",
                    path="/status/503")
    assert r.outcome == pb.OUTCOME_HTTP_BAD_STATUS
    assert r.http.status == 503


async def test_http_expected_status(apple, ctx):
    r = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="http",
                    path="/status/404", expect_status=(200,))
    assert r.outcome == pb.OUTCOME_HTTP_BAD_STATUS
    r = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="http",
                    path="/status/404")
    assert r.outcome == pb.OUTCOME_OK  # any answer below 500 shows the service is reachable


async def test_http_no_answer_times_out_after_connecting(apple, ctx):
    r = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="http",
                    path="/slow", timeout=0.3)
    assert r.outcome == pb.OUTCOME_TIMEOUT
    assert r.phases.HasField("tls") and not r.phases.HasField("first_byte")


async def test_ip_literal_skips_dns(apple, ctx):
    r = await check(ctx, host=apple.host, port=apple.https_port, check="tcp")
    assert r.outcome == pb.OUTCOME_OK
    assert not r.phases.HasField("dns")
