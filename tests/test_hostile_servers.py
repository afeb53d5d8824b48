"""Hostile Apple-side servers (tests/fakeapple/hostile.py): each check that meets one ends
within its timeout, with the outcome that names what happened and bounded memory; a scheduler
running all of them keeps the healthy checks beside them on schedule."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import tracemalloc
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import dns.message
import pytest

from courierwatch.probe.checks.base import CheckContext
from courierwatch.probe.net.proxy import ProxySettings
from courierwatch.probe.net.resolver import Resolver
from courierwatch.probe.scheduler import Scheduler
from courierwatch.probe.targets import Target
from courierwatch.v1 import courierwatch_pb2 as pb
from fakeapple.hostile import (
    DEEP_CHAIN,
    HUGE_ANSWER,
    HostileApple,
    TcpFault,
    TruncatingDNS,
    name_of,
)
from fakeapple.probing import check, check_context

TIMEOUT = 0.3  # of a check that must time out: long enough for loopback, short for the suite
# Of one that ends by itself: it costs no time, and the fake (in this process, rendering DNS
# under tracemalloc) must not turn it into a timeout on a busy machine.
ENDS_ITSELF = 5.0
# Beyond its timeout, a run may take this long to end (cancelling, closing): far above what
# it takes (milliseconds), even on a loaded machine, and far below a real check's interval.
SLACK = 1.0
MEMORY_BOUND = 2 * 2**20  # tracemalloc peak of one run, server side included (about 0.3 MB)
COURIER_SNI = "courier.push.apple.com"


@pytest.fixture(name="hostile")
async def hostile_fixture(tmp_path: Path) -> AsyncIterator[HostileApple]:
    async with HostileApple(tmp_path / "pki") as hostile:
        yield hostile


@pytest.fixture(name="ctx")
def ctx_fixture(hostile: HostileApple) -> CheckContext:
    return check_context(hostile)


@dataclasses.dataclass(frozen=True)
class Case:
    """A check against one hostile server and the outcome it must end with."""

    server: str  # key of HostileApple.servers, or a name in its zone
    check: str
    outcome: pb.Outcome.ValueType
    detail: str = ""  # a part of the detail
    via_proxy: bool = False  # the server stands in for the site's proxy
    options: tuple[tuple[str, Any], ...] = ()
    reached: tuple[str, ...] | None = None  # phases (of PHASES) a timed-out run got through

    @property
    def timeout(self) -> float:
        return TIMEOUT if self.outcome == pb.OUTCOME_TIMEOUT else ENDS_ITSELF

    @property
    def id(self) -> str:
        return f"{self.check}{'-via-proxy' if self.via_proxy else ''}-{self.server}"

    def target(self, hostile: HostileApple, **fields: Any) -> dict[str, Any]:
        direct = self.server in hostile.servers and not self.via_proxy
        # A run that must time out dials the address: with its short timeout, a DNS answer
        # slowed by a busy machine would end it as dns_timeout before the server has its say.
        literal = direct and self.outcome == pb.OUTCOME_TIMEOUT
        return {
            "host": hostile.host if literal else name_of(self.server),
            "port": hostile.port(self.server) if direct else 443,
            "check": self.check,
            "via": "proxy" if self.via_proxy else "direct",
            "timeout": self.timeout,
            **dict(self.options),
            **fields,
        }

    def context(self, hostile: HostileApple, ctx: CheckContext) -> CheckContext:
        if not self.via_proxy:
            return ctx
        return dataclasses.replace(
            ctx, proxy=ProxySettings(hostile.host, hostile.port(self.server))
        )


PHASES = ("connect", "tls", "first_byte")
CONNECTED = ("connect",)
PLAIN = (("tls", False),)
COURIER = (("sni", COURIER_SNI), ("alpn", ("apns-security-v3",)))
NOT_TLS = "does not speak TLS"
TOO_LONG = "an HTTP line longer than 65536 bytes"

CASES = [
    # Accept-and-hang: TCP works, nothing above it answers.
    Case("hang", "tcp", pb.OUTCOME_OK),
    Case("hang", "tls", pb.OUTCOME_TIMEOUT, "no answer in time", reached=CONNECTED),
    Case("hang", "courier", pb.OUTCOME_TIMEOUT, "no answer in time", options=COURIER,
         reached=CONNECTED),
    Case("hang", "http", pb.OUTCOME_TIMEOUT, "no answer in time", options=PLAIN,
         reached=CONNECTED),
    Case("hang", "tcp", pb.OUTCOME_TIMEOUT, "the proxy did not answer in time", via_proxy=True,
         reached=()),
    # A handshake that stops midway.
    Case("stall", "tls", pb.OUTCOME_TIMEOUT, "no answer in time", reached=CONNECTED),
    Case("stall", "courier", pb.OUTCOME_TIMEOUT, "no answer in time", options=COURIER,
         reached=CONNECTED),
    # Something else than TLS where a courier should be.
    Case("garbage", "courier", pb.OUTCOME_PROTOCOL_ERROR, NOT_TLS, options=COURIER),
    Case("banner", "courier", pb.OUTCOME_PROTOCOL_ERROR, NOT_TLS, options=COURIER),
    Case("banner", "http", pb.OUTCOME_PROTOCOL_ERROR, NOT_TLS),
    # HTTP that never ends: the status line is all the check needs.
    Case("slowloris", "http", pb.OUTCOME_TIMEOUT, "no answer in time", options=PLAIN,
         reached=CONNECTED),
    # A byte at a time, thousands of reads: still the peer's slowness, not the probe's error.
    Case("dribble", "http", pb.OUTCOME_TIMEOUT, "no answer in time", options=PLAIN,
         reached=CONNECTED),
    Case("endless-length", "http", pb.OUTCOME_OK, options=PLAIN),
    Case("endless-close", "http", pb.OUTCOME_OK, options=PLAIN),
    Case("endless-chunked", "http", pb.OUTCOME_OK, options=PLAIN),
    Case("endless-tls", "http", pb.OUTCOME_OK),
    Case("huge-status", "http", pb.OUTCOME_PROTOCOL_ERROR, TOO_LONG, options=PLAIN),
    Case("huge-header", "http", pb.OUTCOME_OK, options=PLAIN),  # headers are not read
    # A proxy answering CONNECT with headers that never end.
    Case("huge-header", "tcp", pb.OUTCOME_PROTOCOL_ERROR, f"proxy 127.0.0.1:{{port}}: {TOO_LONG}",
         via_proxy=True),
    Case("endless-headers", "tcp", pb.OUTCOME_PROTOCOL_ERROR, "endless headers", via_proxy=True),
    # DNS answers that lead nowhere.
    Case("loop", "dns", pb.OUTCOME_DNS_NO_ADDRESS,
         f"CNAME loop {name_of('loop')} -> {name_of('loop-a')} -> {name_of('loop-b')} -> "
         f"{name_of('loop')}"),
    Case("loop", "tcp", pb.OUTCOME_DNS_NO_ADDRESS, "CNAME loop"),
    Case("deep", "dns", pb.OUTCOME_DNS_NO_ADDRESS, "CNAME chain longer than 16"),
]  # fmt: skip
# The cases the Scheduler test runs beside healthy targets: those that do not work.
HOSTILE = [case for case in CASES if case.outcome != pb.OUTCOME_OK]


async def measured(ctx: CheckContext, **fields: Any) -> tuple[pb.Result, float, int]:
    """The result of one run, how long it took to return (seconds), and the peak of memory
    allocated meanwhile; a hard cap turns a hang into a failure rather than a stuck suite."""
    tracemalloc.start()
    try:
        started = time.monotonic()
        async with asyncio.timeout(fields["timeout"] + 5):
            result = await check(ctx, **fields)
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, took, peak


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
async def test_each_hostile_server_ends_within_the_timeout(
    hostile: HostileApple, ctx: CheckContext, case: Case
) -> None:
    fields = case.target(hostile)
    result, took, peak = await measured(case.context(hostile, ctx), **fields)
    assert result.outcome == case.outcome, (pb.Outcome.Name(result.outcome), result.detail)
    port = hostile.port(case.server) if case.server in hostile.servers else 0
    assert case.detail.format(port=port) in result.detail
    assert took <= case.timeout + SLACK, took
    assert peak <= MEMORY_BOUND, peak
    if case.reached is not None:
        assert tuple(p for p in PHASES if result.phases.HasField(p)) == case.reached
    if case.server in hostile.servers:  # and the probe hung up: no connection left behind
        await hostile.hostile_server(case.server).wait_ended(1)


async def test_a_huge_dns_answer_is_read_whole_and_bounded(
    hostile: HostileApple, ctx: CheckContext
) -> None:
    query = dns.message.make_query(name_of("huge"), "A").to_wire()
    assert len(hostile.dns.answer(query, "tcp") or b"") > 60_000  # the answer is that huge
    hostile.dns.transports.clear()
    result, took, peak = await measured(ctx, host=name_of("huge"), port=53, check="dns",
                                        timeout=ENDS_ITSELF)  # fmt: skip
    assert result.outcome == pb.OUTCOME_OK, result.detail
    assert len(result.addresses) == HUGE_ANSWER
    # Truncated over UDP, then whole over TCP: both questions, since the answer to AAAA
    # carries the same records (more than once each if a busy machine made an attempt time out).
    assert hostile.dns.transports["tcp"] >= 2
    assert took <= ENDS_ITSELF + SLACK, took
    assert peak <= MEMORY_BOUND, peak


async def test_a_deep_chain_is_judged_on_the_whole_answer(
    hostile: HostileApple, ctx: CheckContext
) -> None:
    """60 hops do not fit in UDP: the verdict comes from the whole answer, over TCP."""
    result = await check(ctx, host=name_of("deep"), port=53, check="dns", timeout=ENDS_ITSELF)
    assert result.outcome == pb.OUTCOME_DNS_NO_ADDRESS, result.detail
    assert hostile.dns.transports["tcp"] >= 2  # both questions
    assert DEEP_CHAIN > 16  # deeper than the resolver follows


TRUNCATED = "answer truncated over UDP, and the TCP retry to 127.0.0.1:{port} failed: "
# What a check says when every UDP answer is truncated and the TCP retry fails so.
BROKEN_TCP = {
    TcpFault.REFUSE: (pb.OUTCOME_DNS_UNREACHABLE, "TCP port {port} closed"),
    TcpFault.HANG_UP: (pb.OUTCOME_PROTOCOL_ERROR, "closed the connection without an answer"),
    TcpFault.RESET: (pb.OUTCOME_PROTOCOL_ERROR, "reset the connection without an answer"),
}


@pytest.mark.parametrize("fault", [TcpFault.REFUSE, TcpFault.HANG_UP, TcpFault.RESET])
async def test_truncated_answer_and_no_tcp(hostile: HostileApple, fault: TcpFault) -> None:
    outcome, why = BROKEN_TCP[fault]
    async with TruncatingDNS(fault) as truncating:
        resolver = Resolver([truncating.host], truncating.port)
        ctx = dataclasses.replace(check_context(hostile), resolver=resolver)
        for kind in ("dns", "tcp"):
            result, took, peak = await measured(
                ctx, host=name_of("tls-ok"), port=hostile.port("tls-ok"), check=kind,
                timeout=ENDS_ITSELF,
            )  # fmt: skip
            assert (pb.Outcome.Name(result.outcome), result.detail) == (
                pb.Outcome.Name(outcome),
                f"{name_of('tls-ok')}: {(TRUNCATED + why).format(port=truncating.port)}",
            )
            assert took <= ENDS_ITSELF + SLACK, took
            assert peak <= MEMORY_BOUND, peak
    assert truncating.udp_queries >= 2


# -- all at once ----------------------------------------------------------------------------

HEALTHY_INTERVAL = 0.2
HEALTHY_RUNS = 8  # results each healthy target must have within the window
HOSTILE_INTERVAL = 1.0
# HEALTHY_RUNS runs due every HEALTHY_INTERVAL take 1.6 s (the hostile ones end their first
# run well within that); a window more than twice that is missed only by a scheduler that the
# hostile runs hold up.
WINDOW = 4.0


class Tally:
    """Results by series; `done` is set once every healthy series has HEALTHY_RUNS and every
    other at least one."""

    def __init__(self, healthy: set[tuple[Any, ...]], hostile: set[tuple[Any, ...]]) -> None:
        self.results: dict[tuple[Any, ...], list[pb.Result]] = {}
        self.healthy, self.hostile = healthy, hostile
        self.done = asyncio.Event()

    def __call__(self, result: pb.Result) -> None:
        series = (result.target, result.port, result.check, result.address_family, result.via)
        self.results.setdefault(series, []).append(result)
        runs = {s: len(self.results.get(s, ())) for s in self.healthy | self.hostile}
        if all(runs[s] >= HEALTHY_RUNS for s in self.healthy) and all(
            runs[s] for s in self.hostile
        ):
            self.done.set()


async def test_healthy_checks_keep_their_schedule_among_hostile_ones(
    hostile: HostileApple,
) -> None:
    ctx = check_context(hostile)
    tls_port, https_port = hostile.port("tls-ok"), hostile.port("https-ok")
    healthy = [
        Target(host=name_of("tls-ok"), port=53, check="dns"),
        Target(host=name_of("tls-ok"), port=tls_port, check="tcp"),
        Target(host=name_of("tls-ok"), port=tls_port, check="tls"),
        Target(host=name_of("https-ok"), port=https_port, check="http"),
    ]
    healthy = [dataclasses.replace(t, interval=HEALTHY_INTERVAL, timeout=1.0) for t in healthy]
    # (target, its context, the outcome it must end with), one Scheduler per context.
    runs: list[tuple[Target, CheckContext, pb.Outcome.ValueType]] = [
        (Target(**case.target(hostile, interval=HOSTILE_INTERVAL)),
         case.context(hostile, ctx), case.outcome)
        for case in HOSTILE
    ]  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        for fault in (TcpFault.REFUSE, TcpFault.HANG_UP):
            server = await stack.enter_async_context(TruncatingDNS(fault))
            resolver_ctx = dataclasses.replace(ctx, resolver=Resolver([server.host], server.port))
            target = Target(host=name_of("tls-ok"), port=server.port, check="dns",
                            interval=HOSTILE_INTERVAL, timeout=ENDS_ITSELF)  # fmt: skip
            runs.append((target, resolver_ctx, BROKEN_TCP[fault][0]))
        tally = Tally({t.series for t in healthy}, {t.series for t, _, _ in runs})
        by_context: dict[int, tuple[CheckContext, list[Target]]] = {id(ctx): (ctx, [*healthy])}
        for target, its_ctx, _ in runs:
            by_context.setdefault(id(its_ctx), (its_ctx, []))[1].append(target)
        schedulers = [Scheduler(targets, its_ctx, tally, startup_spread=0.1)
                      for its_ctx, targets in by_context.values()]  # fmt: skip
        tasks = [asyncio.create_task(scheduler.run()) for scheduler in schedulers]
        try:  # all in one event loop, as in one probe; a miss is told by the counts below
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WINDOW):
                    await tally.done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    for target in healthy:
        results = tally.results.get(target.series, [])
        outcomes = Counter(r.outcome for r in results)
        assert outcomes[pb.OUTCOME_OK] >= HEALTHY_RUNS, (target.check, outcomes)
        assert set(outcomes) == {pb.OUTCOME_OK}, [r.detail for r in results]
    for target, _, outcome in runs:
        ended = [(r.outcome, r.detail) for r in tally.results.get(target.series, [])]
        assert ended, (target.host, target.check, target.via, "never ran")
        assert {o for o, _ in ended} == {outcome}, (target.host, target.check, target.via, ended)
