"""TLS the way Apple's clients judge it: SSL inspection named after its issuer, the chain as
presented, and the provider API's HTTP/2 requirement."""

from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import COURIER_ALPN, COURIER_SNI, INSPECTION_ORG
from fakeapple.probing import (
    check,
    check_context,
)


def courier(port, **fields):
    return {
        "host": COURIER_SNI,
        "port": port,
        "check": "courier",
        "numbers": (1, 2, 3),
        "alpn": (COURIER_ALPN,),
        "expect_issuer": ("Fake Apple",),
        **fields,
    }


async def test_chain_verifying_only_against_the_site_ca_is_intercepted(apple):
    ctx = check_context(apple, site_anchors=(str(apple.inspection_ca_pem_path),))
    r = await check(ctx, **courier(apple.intercepting_port))
    assert r.outcome == pb.OUTCOME_TLS_INTERCEPTED, r.detail
    assert (r.tls.verified_by, r.tls.verified) == ("site", False)
    assert INSPECTION_ORG in r.tls.issuer and INSPECTION_ORG in r.detail
    assert "site's CA" in r.detail
    # Leaf first, then the intermediate the proxy sent along.
    assert len(r.tls.chain_subjects) == 2
    assert "Intermediate" in r.tls.chain_subjects[1]


async def test_chain_verifying_against_nothing_from_an_unexpected_issuer_is_intercepted(apple):
    r = await check(check_context(apple), **courier(apple.intercepting_port))
    assert r.outcome == pb.OUTCOME_TLS_INTERCEPTED, r.detail
    assert r.detail.startswith(f"presented by 'OU={INSPECTION_ORG} Intermediate CA,O=")
    assert r.detail.endswith("not Fake Apple: SSL inspection")
    assert r.tls.verified_by == "" and not r.tls.verified


async def test_a_verifying_chain_from_an_unexpected_issuer_is_intercepted(apple):
    # The site made its inspection root trusted everywhere: the chain verifies, the issuer tells.
    ctx = check_context(apple, also_trusted=(str(apple.inspection_ca_pem_path),))
    r = await check(ctx, **courier(apple.intercepting_port))
    assert r.outcome == pb.OUTCOME_TLS_INTERCEPTED, r.detail
    assert r.tls.verified_by == "expected" and r.detail.startswith("verified, but issued by")


async def test_an_unverifiable_chain_from_the_expected_issuer_is_untrusted(apple):
    r = await check(
        check_context(apple),
        host="expired.apple.com",
        port=apple.expired_port,
        check="tls",
        expect_issuer=("Fake Apple",),
    )
    assert r.outcome == pb.OUTCOME_TLS_UNTRUSTED, r.detail
    assert r.tls.chain_subjects and "expired.apple.com" in r.tls.chain_subjects[0]


async def test_courier_with_apple_issuer_verifies_as_expected(apple):
    r = await check(check_context(apple), **courier(apple.courier_port))
    assert r.outcome == pb.OUTCOME_OK, r.detail
    assert (r.tls.verified_by, r.tls.alpn) == ("expected", COURIER_ALPN)
    assert r.tls.chain_subjects[0] == r.tls.leaf_subject


def provider(port):
    return {
        "host": "api.push.apple.com",
        "port": port,
        "check": "tls",
        "alpn": ("h2", "http/1.1"),
        "require_alpn": "h2",
        "group": "push_provider",
    }


async def test_provider_api_negotiates_h2(apple):
    r = await check(check_context(apple), **provider(apple.provider_port))
    assert (r.outcome, r.tls.alpn) == (pb.OUTCOME_OK, "h2")


async def test_provider_api_without_h2_is_a_middlebox(apple):
    r = await check(check_context(apple), **provider(apple.provider_h1_port))
    assert r.outcome == pb.OUTCOME_TLS_ALPN_MISMATCH, r.detail
    assert r.detail == (
        "negotiated http/1.1, h2 required: a middlebox in the path answers for the service"
    )
    # A server that picks nothing at all is the same finding.
    no_alpn = {
        **provider(apple.mismatch_port),
        "host": "mismatch.apple.com",
        "sni": "mismatch.example.net",
    }  # a TLS server that offers no ALPN at all
    r = await check(check_context(apple), **no_alpn)
    assert r.outcome == pb.OUTCOME_TLS_ALPN_MISMATCH, r.detail
    assert r.detail.startswith("no protocol negotiated, h2 required")
