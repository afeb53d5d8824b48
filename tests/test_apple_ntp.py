"""A real SNTP query: the offset of a clock that is off, and every way an answer is no answer."""

import time

import pytest

from courierwatch.probe.net import sntp
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple import NTP_NAME, NtpMode
from fakeapple.probing import (
    check,
    check_context,
)

TOLERANCE = 0.05  # seconds; loopback round trips are far shorter


async def ask(apple, **fields):
    return await check(
        check_context(apple), host=NTP_NAME, port=apple.ntp_port, check="ntp", **fields
    )


async def test_offset_and_stratum_of_the_answer(apple):
    r = await ask(apple)
    assert r.outcome == pb.OUTCOME_OK, r.detail
    assert abs(r.ntp.offset_seconds - apple.ntp.offset) < TOLERANCE
    assert r.ntp.stratum == apple.ntp.stratum
    assert 0 < r.phases.first_byte < r.phases.total
    assert r.peer_address == apple.host and r.phases.HasField("dns")
    apple.ntp.offset = -30.0
    assert abs((await ask(apple)).ntp.offset_seconds + 30.0) < TOLERANCE


async def test_no_answer_is_a_timeout(apple):
    apple.ntp.mode = NtpMode.SILENT
    r = await ask(apple, timeout=0.3)
    assert (r.outcome, apple.ntp.queries) == (pb.OUTCOME_TIMEOUT, 1)
    assert not r.phases.HasField("first_byte")


@pytest.mark.parametrize(
    ("mode", "words"),
    [(NtpMode.KISS, "kiss-o'-death 'RATE'"), (NtpMode.GARBAGE, "not an NTP server reply")],
)
async def test_answers_that_are_not_time(apple, mode, words):
    apple.ntp.mode = mode
    r = await ask(apple)
    assert r.outcome == pb.OUTCOME_PROTOCOL_ERROR, r.detail
    assert words in r.detail


async def test_nothing_listening_is_refused(apple):
    r = await check(check_context(apple), host=NTP_NAME, port=apple.closed_port, check="ntp")
    assert r.outcome == pb.OUTCOME_REFUSED, r.detail  # the ICMP port unreachable came back


def test_reply_must_answer_our_request():
    now = time.time()
    request = sntp.request(now)
    reply = bytearray(48)
    reply[0] = (4 << 3) | 4
    reply[1] = 1
    reply[24:32] = request[40:48]
    reply[40:48] = sntp.to_ntp(now + 1).to_bytes(8, "big")
    assert sntp.parse(bytes(reply), request).stratum == 1
    with pytest.raises(sntp.InvalidReply, match="originate time differs"):
        sntp.parse(bytes(reply), sntp.request(now + 5))
    with pytest.raises(sntp.InvalidReply, match="40-byte reply"):
        sntp.parse(bytes(reply[:40]), request)
    reply[0] = (3 << 6) | (4 << 3) | 4  # leap indicator 3: alarm
    with pytest.raises(sntp.InvalidReply, match="not synchronised"):
        sntp.parse(bytes(reply), request)
