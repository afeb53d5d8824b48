"""A real SNTP query: the offset of a clock that is off (clock_skew past the threshold), taken
at the socket whatever the event loop is doing, and every way an answer is no answer."""

import asyncio
import re
import time

import pytest

from courierwatch.common.configfile import ConfigError
from courierwatch.probe.checks import ntp
from courierwatch.probe.config import load_probe_config
from courierwatch.probe.net import sntp
from courierwatch.probe.targets import Target
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


# The one-shot run starts every check at once, so the event loop is busy when the answer lands;
# what the loop was doing meanwhile must not count as network time.
SOCKET_BOUND = 0.005  # seconds: one-shot and daemon offsets agree within this


def busy(seconds):
    """Hold the event loop for `seconds` of CPU, as a slow callback of another check would."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_offset_ignores_a_loop_blocked_when_the_answer_lands(apple):
    apple.ntp.offset = 5.0
    apple.ntp.after_reply = lambda: busy(0.03)  # right after the answer left the server
    r = await ask(apple)
    assert r.outcome == pb.OUTCOME_CLOCK_SKEW, r.detail  # 5 s passes the 1 s threshold
    assert abs(r.ntp.offset_seconds - 5.0) < SOCKET_BOUND, r.ntp.offset_seconds
    assert r.phases.first_byte < 0.03  # the blocked loop is the probe's time, not the path's


async def test_offset_ignores_many_busy_coroutines(apple):
    apple.ntp.offset = -0.25
    done = asyncio.Event()

    async def worker():
        for _ in range(2_000):  # bounded: ends with the check or after 2,000 slices
            if done.is_set():
                return
            busy(0.0001)
            await asyncio.sleep(0)

    workers = [asyncio.create_task(worker()) for _ in range(200)]
    try:
        await asyncio.sleep(0)  # let every worker take its first slice
        results = [await ask(apple, timeout=10.0) for _ in range(3)]
    finally:
        done.set()
        await asyncio.gather(*workers)
    for r in results:
        assert r.outcome == pb.OUTCOME_OK, r.detail
        assert abs(r.ntp.offset_seconds + 0.25) < SOCKET_BOUND, r.ntp.offset_seconds


async def test_a_clock_off_by_seconds_is_clock_skew(apple):
    apple.ntp.offset = 5.0
    r = await ask(apple)
    assert r.outcome == pb.OUTCOME_CLOCK_SKEW, r.detail
    assert abs(r.ntp.offset_seconds - 5.0) < TOLERANCE  # recorded all the same
    assert re.fullmatch(
        r"clock off by \+5\.0\d\d s: this probe is 5\.0\d\d s behind time\.apple\.com "
        r"\(threshold 1 s\)",
        r.detail,
    ), r.detail
    assert not ntp.critical(Target(NTP_NAME, apple.ntp_port, "ntp"), r)
    apple.ntp.offset = -0.9  # within the threshold, either way
    assert (await ask(apple)).outcome == pb.OUTCOME_OK


async def test_a_clock_off_by_minutes_is_critical(apple):
    apple.ntp.offset = -90.0
    r = await ask(apple)
    assert r.outcome == pb.OUTCOME_CLOCK_SKEW, r.detail
    assert r.detail.startswith("critical: clock off by -90.0"), r.detail
    assert "ahead of time.apple.com" in r.detail and "over 60 s" in r.detail
    assert ntp.critical(Target(NTP_NAME, apple.ntp_port, "ntp"), r)


async def test_thresholds_are_the_targets_own(apple):
    apple.ntp.offset = 5.0
    loose = (("max_offset", 10.0), ("critical_offset", 600.0))
    assert (await ask(apple, extra=loose)).outcome == pb.OUTCOME_OK
    strict = (("max_offset", 0.5), ("critical_offset", 2.0))
    r = await ask(apple, extra=strict)
    assert r.detail.startswith("critical: ") and "over 2 s" in r.detail, r.detail
    assert ntp.critical(Target(NTP_NAME, apple.ntp_port, "ntp", extra=strict), r)


def test_threshold_options_are_read_and_checked(tmp_path):
    path = tmp_path / "probe.yaml"
    target = "{host: time.apple.com, check: ntp, max_offset: 500ms, critical_offset: 2m}"
    path.write_text(f"catalog: {{groups: []}}\ntargets:\n  - {target}\n", encoding="utf-8")
    (loaded,) = load_probe_config(
        str(path), require_identity=False, host_has_ipv6=lambda: False
    ).targets
    assert (loaded.option("max_offset"), loaded.option("critical_offset")) == (0.5, 120.0)
    path.write_text(
        "catalog: {groups: []}\ntargets:\n"
        "  - {host: time.apple.com, check: ntp, max_offset: 2m, critical_offset: 1m}\n",
        encoding="utf-8",
    )
    with pytest.raises(
        ConfigError,
        match=r"probe\.yaml:3: .*critical_offset: critical_offset "
        "must not be below max_offset",
    ):
        load_probe_config(str(path), require_identity=False, host_has_ipv6=lambda: False)
