"""Naming the POP from courier CNAME chains of every shape seen: 2017, 2019 and today's."""

import logging

import pytest

from courierwatch.probe import catalog, pop
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple.probing import check, check_context

PATTERN = catalog.apple().pop_pattern
MIDDLE = "36.courier-push-apple.com.akadns.net"


@pytest.mark.parametrize(
    ("edge", "expected"),
    [
        ("pop-namer-ne-courier.push-apple.com.akadns.net", "namer-ne"),  # 2017 talk
        ("apac-asia-courier-4.push-apple.com.akadns.net", "apac-asia"),  # 2019 talk
        ("us-sandbox-courier-4.push-apple.com.akadns.net.", "us-sandbox"),
        ("pop-eur-benelux-courier.push-apple.com.akadns.net", "eur-benelux"),  # captures
        ("pop-eur-central-courier.push-apple.com.akadns.net", "eur-central"),
        ("eu-central-courier-4.push-apple.com.akadns.net", "eu-central"),
        ("us-courier.push-apple.com.akadns.net", "us"),
        ("china-courier.push-apple.com.akadns.net", "china"),
        ("POP-EUR-Benelux-Courier.Push-Apple.com.akadns.net", "eur-benelux"),
    ],
)
def test_every_shape_names_its_pop(edge, expected):
    assert pop.extract([MIDDLE, edge], PATTERN) == expected


def test_the_middle_hop_alone_is_a_courier_of_unknown_pop():
    assert pop.extract([MIDDLE], PATTERN) == pop.UNKNOWN


def test_names_that_are_no_couriers_have_no_pop():
    assert pop.extract(["time.g.aaplimg.com", "x.edgekey.net"], PATTERN) == pop.NOT_A_COURIER


def test_an_unknown_shape_is_logged_once_with_its_hop(caplog):
    edge = "courier-anycast-77.push-apple.com.akadns.net"
    with caplog.at_level(logging.WARNING, logger="courierwatch.probe.pop"):
        assert pop.extract([MIDDLE, edge], PATTERN) == pop.UNKNOWN
        assert pop.extract([MIDDLE, edge], PATTERN) == pop.UNKNOWN
    lines = [r.getMessage() for r in caplog.records if edge in r.getMessage()]
    assert len(lines) == 1, lines


@pytest.mark.parametrize(
    ("n", "edge", "expected"),
    [
        (41, "pop-eur-benelux-courier.push-apple.com.akadns.net", "eur-benelux"),
        (42, "us-courier.push-apple.com.akadns.net", "us"),
        (43, "pop-namer-ne-courier.push-apple.com.akadns.net", "namer-ne"),
    ],
)
async def test_a_dns_check_reads_todays_shapes_from_a_real_answer(apple, n, edge, expected):
    apple.dns.courier_chain(n, "", apple.host, edge=edge)
    result = await check(
        check_context(apple), host=f"{n}-courier.push.apple.com", port=53, check="dns"
    )
    assert (result.outcome, result.pop) == (pb.OUTCOME_OK, expected)
    assert list(result.cname_chain) == [f"{n}.courier-push-apple.com.akadns.net", edge]
