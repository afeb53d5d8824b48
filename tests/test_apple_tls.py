"""TLS the way Apple's clients judge it: SSL inspection named after its issuer on every catalog
group's hosts (with or without trust.site, verifying or not), the chain as presented, broken
chains from expected issuers kept apart, and the provider API's HTTP/2 requirement."""

import contextlib
import dataclasses
import datetime

import pytest
import trustme

from courierwatch.probe import catalog
from courierwatch.probe.checks import http
from courierwatch.probe.runner import run_check
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import COURIER_ALPN, COURIER_SNI, INSPECTION_ORG, HTTPServer, TLSServer
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


# Interception on every Apple TLS check: the catalog's own expected issuers, an inspection box
# that re-signs whatever host it is asked for, and no trust.site unless said.
def catalog_tls_targets():
    return [
        t
        for t in catalog.targets()
        if t.check in ("tls", "courier") or (t.check == "http" and http.over_tls(t.tls, t.port))
    ]


def first_tls_target(group):
    return next(t for t in catalog_tls_targets() if t.group == group)


def test_every_catalog_tls_target_names_the_issuers_it_expects():
    targets = catalog_tls_targets()
    assert len({t.group for t in targets}) >= 14  # every group with a TLS endpoint
    missing = sorted({f"{t.group}: {t.host}" for t in targets if not t.expect_issuer})
    assert not missing
    # A host of another company names its CDN's CAs, not Apple's.
    relay = next(t for t in targets if t.host == "apple-relay.cloudflare.com")
    assert "Cloudflare" in relay.expect_issuer and "Apple" not in relay.expect_issuer


@contextlib.asynccontextmanager
async def serving(apple, cert, host):
    """A TLS server presenting `cert`, with `host` resolving to it."""
    apple.dns.add_a(host, apple.host)
    async with TLSServer(cert, alpn=["http/1.1", COURIER_ALPN, "h2"], host=apple.host) as server:
        yield server


def pointed_at(target, server):
    # The fake lives on loopback: any address is fine here (the catalog's "public" would not be).
    return dataclasses.replace(target, port=server.port, addresses="any", timeout=2.0)


GROUPS = ("device_setup", "device_management", "certificate_validation", "software_updates",
          "apple_account", "app_store", "business_school", "network_quality")  # fmt: skip


@pytest.mark.parametrize("group", GROUPS)
async def test_an_inspection_box_is_named_on_every_groups_hosts(apple, group):
    target = first_tls_target(group)
    async with serving(apple, apple.pki.issue_inspected(target.server_name), target.host) as box:
        r = await run_check(pointed_at(target, box), check_context(apple))
        assert r.outcome == pb.OUTCOME_TLS_INTERCEPTED, (target.host, r.detail)
        assert INSPECTION_ORG in r.tls.issuer and f"presented by '{r.tls.issuer}'" in r.detail
        assert r.detail.endswith(f"not {' or '.join(target.expect_issuer)}: SSL inspection")
        assert (r.tls.verified, r.tls.verified_by) == (False, "")
        # One handshake was enough: the chain was read from the failed one.
        assert len(box.server_names) == 1
        # With the site's inspection root configured, the same box is named as the site's CA.
        site = check_context(apple, site_anchors=(str(apple.inspection_ca_pem_path),))
        r = await run_check(pointed_at(target, box), site)
        assert r.outcome == pb.OUTCOME_TLS_INTERCEPTED and r.tls.verified_by == "site", r.detail


async def test_a_cdn_hosts_own_issuers_are_no_inspection_but_apples_are(apple):
    relay = next(t for t in catalog_tls_targets() if t.host == "apple-relay.cloudflare.com")
    cdn = trustme.CA(organization_name="Cloudflare, Inc.", organization_unit_name="Cloudflare CA")
    # Not trusted here, so untrusted: but from an issuer the endpoint expects, so not inspection.
    async with serving(apple, cdn.issue_cert(relay.host), relay.host) as edge:
        r = await run_check(pointed_at(relay, edge), check_context(apple))
    assert r.outcome == pb.OUTCOME_TLS_UNTRUSTED, r.detail
    async with serving(apple, apple.pki.issue(relay.host), relay.host) as edge:  # "Fake Apple"
        r = await run_check(pointed_at(relay, edge), check_context(apple))
    assert r.outcome == pb.OUTCOME_TLS_INTERCEPTED, r.detail


async def test_a_genuine_chain_passes_the_catalogs_issuers(apple):
    target = first_tls_target("device_management")  # an http check over TLS
    apple.dns.add_a(target.host, apple.host)
    async with HTTPServer(apple.pki.issue(target.server_name), host=apple.host) as server:
        r = await run_check(pointed_at(target, server), check_context(apple))
    assert (r.outcome, r.http.status) == (pb.OUTCOME_OK, 200), r.detail
    assert r.tls.verified_by == "expected" and "Fake Apple" in r.tls.issuer


def yesterday():
    return datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)


@pytest.mark.parametrize(
    ("make", "outcome", "words"),
    [
        # Expired, from the expected CA.
        (lambda pki, host: pki.issue(host, not_before=yesterday() - datetime.timedelta(days=30),
                                     not_after=yesterday()),
         pb.OUTCOME_TLS_UNTRUSTED, "expired"),
        # A name the certificate does not carry, from the expected CA.
        (lambda pki, host: pki.issue("elsewhere.example.net"), pb.OUTCOME_TLS_NAME_MISMATCH, ""),
        # An expected issuer's name on a CA this probe does not have (no Apple Root installed).
        (lambda pki, host: trustme.CA(organization_name="Apple Inc.").issue_cert(host),
         pb.OUTCOME_TLS_UNTRUSTED, "unable to get local issuer certificate"),
    ],
)  # fmt: skip
async def test_broken_chains_from_expected_issuers_keep_their_outcomes(apple, make, outcome, words):
    target = first_tls_target("software_updates")
    async with serving(apple, make(apple.pki, target.server_name), target.host) as server:
        r = await run_check(pointed_at(target, server), check_context(apple))
    assert r.outcome == outcome and words in r.detail, r.detail
