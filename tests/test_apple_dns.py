"""The DNS step as APNs needs it: rotating courier names, the POP, sinkholes and hijacks,
families; judged from the answer, before anything is dialled."""

import dataclasses
import random

import pytest

from courierwatch.probe import pop, sanity
from courierwatch.probe.catalog import apple as catalog_apple
from courierwatch.probe.net.resolver import Resolver
from courierwatch.probe.oneshot import readiness
from courierwatch.probe.rotation import Rotation, parse_numbers
from courierwatch.probe.targets import Target, expand
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import (
    COURIER_ALPN,
    COURIER_POP,
    COURIER_SNI,
    ELSEWHERE_NAME,
    PRIVATE_NAME,
    SINKHOLE_NAME,
    UNKNOWN_EDGE,
    UNKNOWN_POP_COURIER,
)
from fakeapple.dns import closed_port
from fakeapple.probing import (
    check,
    check_context,
    recorded_connects,
)


@pytest.fixture
def ctx(apple):
    return check_context(apple)


def courier(apple, **fields):
    return {
        "host": COURIER_SNI,
        "port": apple.courier_port,
        "check": "courier",
        "numbers": (1, 2, 3),
        "alpn": (COURIER_ALPN,),
        "addresses": "apple",
        **fields,
    }


async def test_courier_names_the_pop_and_keeps_the_logical_target(apple, ctx):
    r = await check(ctx, **courier(apple))
    assert r.outcome == pb.OUTCOME_OK, r.detail
    assert r.target == COURIER_SNI and r.check == "courier"
    assert r.dialled_host in {f"{n}-courier.push.apple.com" for n in (1, 2, 3)}
    assert r.pop == COURIER_POP
    assert r.tls.verified_by == "expected"
    assert apple.courier.server_names == [COURIER_SNI]  # SNI is the logical name


async def test_pop_change_is_seen_at_the_next_run(apple, ctx):
    dns_check = {"host": COURIER_SNI, "port": 53, "check": "dns", "numbers": (1, 2, 3)}
    assert (await check(ctx, **dns_check)).pop == COURIER_POP
    apple.move_couriers("apac-asia")
    r = await check(ctx, **dns_check)
    assert (r.outcome, r.pop) == (pb.OUTCOME_OK, "apac-asia")
    assert r.cname_chain[-1] == "apac-asia-courier-4.push-apple.com.akadns.net"


async def test_a_courier_chain_of_unknown_shape_is_unknown_not_dropped(apple, ctx):
    r = await check(ctx, **courier(apple, numbers=(UNKNOWN_POP_COURIER,)))
    assert r.outcome == pb.OUTCOME_OK, r.detail
    assert (r.pop, r.cname_chain[-1]) == (pop.UNKNOWN, UNKNOWN_EDGE)


async def test_names_that_are_no_couriers_have_no_pop(apple, ctx):
    r = await check(ctx, host="gdmf.apple.com", port=53, check="dns")
    assert (r.outcome, r.pop) == (pb.OUTCOME_OK, "")


async def test_rotation_covers_the_configured_range(apple, ctx):
    numbers = (1, 2, 3)
    dialled = [
        (await check(ctx, **courier(apple, numbers=numbers))).dialled_host
        for _ in range(2 * len(numbers))
    ]
    expected = {f"{n}-courier.push.apple.com" for n in numbers}
    assert set(dialled[:3]) == expected and dialled[3:] == dialled[:3]  # a cycle, in order
    assert sum(apple.dns.query_count(name) for name in expected) == 6


def test_rotation_starts_anywhere_and_visits_every_number():
    numbers = parse_numbers("1-50")
    starts = {Rotation(random.Random(seed)).next("k", numbers) for seed in range(20)}
    assert len(starts) > 5  # probes do not all begin at the same courier
    rotation = Rotation(random.Random(1))
    assert sorted(rotation.next("k", numbers) for _ in numbers) == list(numbers)
    assert parse_numbers("1-3, 7") == (1, 2, 3, 7) and parse_numbers([5, 2]) == (2, 5)


@pytest.mark.parametrize(
    ("host", "outcome", "address"),
    [
        (SINKHOLE_NAME, pb.OUTCOME_DNS_SINKHOLE, "0.0.0.0"),
        (PRIVATE_NAME, pb.OUTCOME_DNS_HIJACK, "10.20.30.40"),
        (ELSEWHERE_NAME, pb.OUTCOME_DNS_HIJACK, "198.51.100.7"),
    ],
)
async def test_filtered_answers_are_dns_findings_and_never_dialled(
    apple, ctx, host, outcome, address
):
    with recorded_connects() as connects:
        r = await check(
            ctx, host=host, port=apple.https_port, check="tls", addresses="apple", family="ipv4"
        )
    assert r.outcome == outcome, r.detail
    assert address in r.detail and host in r.detail
    assert not r.phases.HasField("connect")
    assert [a for a in connects if a[0] != apple.host] == []  # only the fake DNS was asked
    assert connects  # the recorder works: the DNS query went out


async def test_sinkhole_applies_even_to_targets_without_expectations(apple, ctx):
    r = await check(ctx, host=SINKHOLE_NAME, port=443, check="tcp")  # addresses: any
    assert r.outcome == pb.OUTCOME_DNS_SINKHOLE, r.detail
    r = await check(ctx, host=PRIVATE_NAME, port=53, check="dns")
    assert r.outcome == pb.OUTCOME_OK  # a custom name may well be private


def test_sanity_rules():
    apple_only = catalog_apple().ranges
    judge = sanity.judge
    assert judge("n", ["17.57.144.10", "2620:149:a44::1"], "apple", apple_only) is None
    assert judge("n", ["127.0.0.1"], "apple", apple_only)[0] == pb.OUTCOME_DNS_SINKHOLE
    assert judge("n", ["127.0.0.1"], "apple", sanity.parse_ranges(["127.0.0.0/8"])) is None
    assert judge("n", ["::"], "apple", sanity.parse_ranges(["::/0"]))[0] == pb.OUTCOME_DNS_SINKHOLE
    for private in ("100.64.1.1", "169.254.1.1", "fd00::1", "192.168.1.1"):
        assert judge("n", [private], "public", apple_only)[0] == pb.OUTCOME_DNS_HIJACK, private
    assert judge("n", ["198.51.100.7"], "public", apple_only) is None
    assert judge("n", ["17.0.0.1", "0.0.0.0"], "apple", apple_only)[0] == pb.OUTCOME_DNS_SINKHOLE


def test_pop_pattern_shapes():
    pattern = catalog_apple().pop_pattern
    chain = [
        "47.courier-push-apple.com.akadns.net",
        "apac-asia-courier-4.push-apple.com.akadns.net",
    ]
    assert pop.extract(chain, pattern) == "apac-asia"
    assert pop.extract(["us-sandbox-courier-4.push-apple.com.akadns.net."], pattern) == "us-sandbox"
    assert pop.extract([chain[0], "x.edgekey.net"], pattern) == pop.UNKNOWN
    assert pop.extract(["time.g.aaplimg.com"], pattern) == ""


async def test_a_family_bound_target_asks_only_its_record_type(apple, ctx):
    apple.dns.add_aaaa("gdmf.apple.com", "::1")
    v6 = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="tcp", family="ipv6")
    assert list(v6.addresses) == ["::1"] and v6.address_family == "ipv6"
    assert apple.dns.query_count("gdmf.apple.com", "A") == 0
    v4 = await check(ctx, host="gdmf.apple.com", port=apple.https_port, check="tcp", family="ipv4")
    assert (v4.outcome, v4.peer_address, v4.address_family) == (pb.OUTCOME_OK, apple.host, "ipv4")
    # Nothing listens on ::1 here (or there is no IPv6 at all): the v6 series fails on its
    # own while the v4 one works.
    assert v6.outcome != pb.OUTCOME_OK
    r = await check(ctx, host="captive.apple.com", port=53, check="dns", family="ipv6")
    assert (r.outcome, r.detail) == (pb.OUTCOME_DNS_NO_ADDRESS, "captive.apple.com: no AAAA record")


def test_families_expand_connecting_targets_only():
    targets = [
        Target("a.example", 443, "tls"),
        Target("a.example", 53, "dns"),
        Target("t.example", 123, "ntp"),
        Target("192.0.2.1", 22, "tcp"),
    ]
    expanded = expand(targets, ("ipv4", "ipv6"), proxy=True)
    assert [(t.check, t.family, t.via) for t in expanded] == [
        ("tls", "ipv4", "direct"),
        ("tls", "ipv6", "direct"),
        ("tls", "", "proxy"),
        ("dns", "", "direct"),
        ("ntp", "ipv4", "direct"),
        ("ntp", "ipv6", "direct"),
        ("tcp", "ipv4", "direct"),  # an address literal keeps its own family
        ("tcp", "", "proxy"),
    ]
    assert len({t.series for t in expanded}) == len(expanded)


async def test_a_resolver_that_refuses_is_dns_refused_with_its_fix(apple, ctx):
    apple.dns.refuse("gdmf.apple.com")
    r = await check(ctx, host="gdmf.apple.com", port=53, check="dns", group="device_management")
    assert r.outcome == pb.OUTCOME_DNS_REFUSED, r.detail
    assert (
        r.detail
        == f"gdmf.apple.com: resolver {apple.host}:{apple.dns_port} refused the query (REFUSED)"
    )
    assert readiness.action(r).text == (
        "the resolver refuses queries for gdmf.apple.com: check its access list (allow-query,"
        " access-control) and any DNS policy that blocks the name"
    )
    servfail = await check(ctx, host="servfail.apple.com", port=53, check="dns")
    assert servfail.outcome == pb.OUTCOME_DNS_SERVFAIL  # only ever rcode SERVFAIL


async def test_a_resolver_that_cannot_be_reached_is_dns_unreachable_not_servfail(apple, ctx):
    with closed_port(apple.host) as port, recorded_connects() as connects:
        unreached = dataclasses.replace(ctx, resolver=Resolver([apple.host], port))
        r = await check(unreached, **courier(apple))
    assert r.outcome == pb.OUTCOME_DNS_UNREACHABLE, r.detail
    assert (
        r.detail
        == f"{r.dialled_host}: resolver {apple.host}:{port} unreachable: UDP port {port} closed"
    )
    assert [a for a in connects if a[0] != apple.host or a[1] != port] == []  # nothing dialled
    assert not r.phases.HasField("connect")
    assert readiness.action(r).text == (
        f"no resolver can be reached for {r.dialled_host}: check the nameserver addresses,"
        " the route to them and that UDP and TCP port 53 to them are open"
    )
