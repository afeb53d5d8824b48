"""The remote-write output: the encoder (samples of each result at its own time, the series of
scrape mode, deterministic) and the sender against a little receiver on loopback that decodes
what it gets (retries, rejections, backpressure, the memory bound, its metrics)."""

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import cramjam
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from courierwatch.collector.exposition import CHECK_FAMILIES, Exposition
from courierwatch.collector.remote import encode
from courierwatch.collector.remote.encode import Encoder
from courierwatch.collector.remote.send import (
    HEADERS,
    Backoff,
    Closed,
    Rejection,
    RemoteWriter,
    rejection,
    retry_after,
)
from courierwatch.collector.state import State
from courierwatch.prompb import remote_pb2 as prompb
from courierwatch.v1 import courierwatch_pb2 as pb

NOW = 1_700_000_000.0


def result(seq, target="courier.push.apple.com", port=5223, check="courier", group="push",
           outcome=pb.OUTCOME_OK, at=NOW - 5, **fields):  # fmt: skip
    """A result started at `at` (Unix seconds, any precision down to the nanosecond)."""
    r = pb.Result(seq=seq, target=target, port=port, check=check, group=group, outcome=outcome,
                  interval_seconds=30, **fields)  # fmt: skip
    r.started_at.FromNanoseconds(round(at * 1e9))
    return r


def rich_results():
    """Every family the encoder writes, an unknown outcome, a phase that took 0 s."""
    tls = result(1, "1-courier.push.apple.com", 5223, "tls", "push", address_family="ipv4",
                 via="direct", pop="eu-central")  # fmt: skip
    tls.phases.dns, tls.phases.connect, tls.phases.tls, tls.phases.total = 0.0, 0.02, 0.05, 0.08
    tls.tls.not_after.FromSeconds(2_000_000_000)
    tls.tls.issuer, tls.tls.verified_by = 'CN=Apple "Public"\nCA', "expected"
    courier = result(2, "courier.push.apple.com", 443, "courier", "push", pop="eu-nw",
                     at=NOW - 4.9999999)  # fmt: skip
    courier.phases.total = 0.3
    refused = result(3, "gdmf.apple.com", 443, "http", "device_management", pb.OUTCOME_REFUSED)
    refused.phases.dns, refused.phases.total = 0.01, 0.011
    refused.phases.first_byte = 0.005
    future = result(4, "x.apple.com", 80, "http", "g", outcome=999)  # from a newer probe
    ntp = result(5, "time.apple.com", 123, "ntp", "ntp")
    ntp.ntp.offset_seconds, ntp.phases.first_byte = -0.0042, 0.012
    skewed = result(6, "time.euro.apple.com", 123, "ntp", "ntp", pb.OUTCOME_CLOCK_SKEW)
    skewed.ntp.offset_seconds = 42.0  # an answer was read: the offset is the finding
    return [tls, courier, refused, future, ntp, skewed]


def decode(data: bytes) -> list[tuple[dict[str, str], float, int]]:
    """(labels, value, timestamp) of every sample of WriteRequest bytes, in order; checks
    what the specification asks of every series on the way."""
    samples = []
    for series in prompb.WriteRequest.FromString(data).timeseries:
        names = [label.name for label in series.labels]
        assert names == sorted(names), names
        assert len(set(names)) == len(names), names
        assert all(label.value for label in series.labels), series
        assert names[0] == "__name__"
        labels = {label.name: label.value for label in series.labels}
        samples += [(labels, s.value, s.timestamp) for s in series.samples]
    return samples


def series(samples):
    return {(labels["__name__"], frozenset(labels.items())): value for labels, value, _ in samples}


# --- The encoder ------------------------------------------------------------------------------


def test_every_sample_at_its_result_own_time_in_milliseconds_rounded_down():
    results = rich_results()
    data, count = Encoder().encode("ams", "pi1", results)
    samples = decode(data)
    assert count == len(samples) > len(results)
    by_target = {}
    for labels, _, timestamp in samples:
        by_target.setdefault(labels.get("target"), set()).add(timestamp)
    expected = {r.target: {r.started_at.seconds * 1000 + r.started_at.nanos // 1_000_000}
                for r in results}  # fmt: skip
    pop_info = by_target.pop(None)  # courierwatch_pop_info has no target
    assert by_target == expected
    assert expected["courier.push.apple.com"] == {int(NOW * 1000) - 5000}  # 4.9999999 s before
    assert pop_info == expected["courier.push.apple.com"]


def test_the_same_series_and_values_as_scrape_mode():
    """Every check family of /metrics, with its labels and values, from the same results (a
    label with an empty value is not stored by a scrape either); pop_info as the probe's."""
    results = rich_results()
    state = State(clock=lambda: NOW)
    state.apply(state.connect(pb.Hello(site="ams", probe_id="pi1")), results)
    scraped = {}
    for family in text_string_to_metric_families(Exposition(state).render().decode()):
        for sample in family.samples:
            labels = frozenset((k, v) for k, v in sample.labels.items() if v)
            scraped[(sample.name, labels | {("__name__", sample.name)})] = sample.value
    written = series(decode(Encoder().encode("ams", "pi1", results)[0]))
    names = {name for name, _ in written}
    assert names == {f.name for f in CHECK_FAMILIES} | {"courierwatch_pop_info"}
    assert {key: scraped[key] for key in written if key in scraped} == written
    assert set(written) <= set(scraped)
    check_names = {f.name for f in CHECK_FAMILIES}
    assert {key for key in scraped if key[0] in check_names} <= set(written)


def test_every_phase_that_ran_and_none_that_did_not():
    r = result(1, check="http", port=443)
    r.phases.dns, r.phases.connect, r.phases.tls, r.phases.first_byte, r.phases.total = (
        0.001, 0.0, 0.003, 0.004, 0.5)  # fmt: skip
    partial = result(2, check="tcp", port=443, target="other")
    partial.phases.total = 0.25
    samples = decode(Encoder().encode("ams", "pi1", [r, partial])[0])
    phases = {(labels["target"], labels["phase"]): value for labels, value, _ in samples
              if labels["__name__"] == "courierwatch_check_duration_seconds"}  # fmt: skip
    assert phases == {
        ("courier.push.apple.com", "dns"): 0.001,
        ("courier.push.apple.com", "connect"): 0.0,
        ("courier.push.apple.com", "tls"): 0.003,
        ("courier.push.apple.com", "first_byte"): 0.004,
        ("courier.push.apple.com", "total"): 0.5,
        ("other", "total"): 0.25,
    }


def test_outcome_is_a_one_valued_series_named_by_its_label_and_success_follows():
    ok, bad, unknown = result(1), result(2, outcome=pb.OUTCOME_TLS_UNTRUSTED), result(3, outcome=77)
    for r, label, success in ((ok, "ok", 1.0), (bad, "tls_untrusted", 0.0),
                              (unknown, "unknown", 0.0)):  # fmt: skip
        samples = decode(Encoder().encode("ams", "pi1", [r])[0])
        values = {(labels["__name__"], labels.get("outcome")): v for labels, v, _ in samples}
        assert values[("courierwatch_check_outcome", label)] == 1.0
        assert values[("courierwatch_check_success", None)] == success


def test_deterministic_whoever_encodes_and_however_often():
    """The same result makes the same bytes: again, from a second collector (a fresh
    encoder), and from an encoder whose caches were emptied in between."""
    results = rich_results()
    first = Encoder()
    once = first.encode("ams", "pi1", results)
    assert first.encode("ams", "pi1", results) == once
    assert Encoder().encode("ams", "pi1", results) == once
    small = Encoder(max_cached_checks=2)
    assert small.encode("ams", "pi1", results) == once
    assert small.encode("ams", "pi1", list(reversed(results)))[1] == once[1]
    assert [small.encode("ams", "pi1", [r])[0] for r in results] == [
        Encoder().encode("ams", "pi1", [r])[0] for r in results
    ]
    assert Encoder().encode("ams", "pi2", results) != once  # the probe is in the series


def test_the_label_bytes_of_every_probe_are_kept_however_big_the_fleet_until_it_is_forgotten():
    """The cap is per probe: a fleet with more checks than one probe's cap keeps them all
    (one cap over all probes cleared and rebuilt every check's, all the time, at 5,000 x 250
    with a cap of a million), and a probe the state forgets is dropped."""
    results = rich_results()
    encoder = Encoder(max_cached_checks=len(results))
    fleet = [("ams", f"pi{i}") for i in range(5)]
    for site, probe_id in fleet:
        encoder.encode(site, probe_id, results)
    assert encoder.cached() == 5 * len(results)
    encoder.forget([*fleet[:2], ("nowhere", "never-seen")])
    assert encoder.cached() == 3 * len(results)
    unknown = [result(len(results) + n, target=f"made-up-{n}.example") for n in range(3)]
    encoder.encode("ams", "pi4", unknown)  # beyond its cap: that probe starts again alone
    assert encoder.cached() == 2 * len(results) + len(unknown)


@pytest.mark.parametrize(
    "ms", [0, 5, 127, 128, 1_000, -1_000, 2**35 - 1, 2**35, 2**42, 253_402_300_799_999]
)
def test_any_timestamp_encodes(ms):
    r = result(1)
    r.started_at.FromMilliseconds(ms)
    samples = decode(Encoder().encode("ams", "pi1", [r])[0])
    assert {timestamp for _, _, timestamp in samples} == {ms}


def test_varint_matches_protobuf():
    for value in (1, 127, 128, 300, 2**35, 2**63 - 1, -1, -(2**63)):  # 0 is not written
        message = prompb.Sample(timestamp=value).SerializeToString()
        assert message == b"\x10" + encode.varint(value)


def test_nothing_to_write_for_no_results():
    assert Encoder().encode("ams", "pi1", []) == (b"", 0)


# --- The sender against a receiver ---------------------------------------------------------


class Receiver:
    """A remote-write endpoint on loopback: decodes each request, answers from `script`
    ((status, headers, body) per request, then 204), and can hold answers until released."""

    def __init__(self, script=()):
        self.script = list(script)
        self.requests: list[list[tuple[dict[str, str], float, int]]] = []
        self.headers: list[dict[str, str]] = []
        self.arrived = asyncio.Event()  # set at each request; the test clears it
        self.release = asyncio.Event()
        self.release.set()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.headers.append(dict(request.headers))
        self.requests.append(decode(bytes(cramjam.snappy.decompress_raw(body))))
        self.arrived.set()
        await self.release.wait()
        status, headers, text = self.script.pop(0) if self.script else (204, {}, "")
        return web.Response(status=status, headers=headers, text=text)

    def stored(self):
        """Every sample received (what the store has, when the script holds no failure)."""
        return [sample for request in self.requests for sample in request]


@asynccontextmanager
async def receiving(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/api/v1/write", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    receiver.url = f"http://127.0.0.1:{port}/api/v1/write"
    try:
        yield receiver
    finally:
        receiver.release.set()
        await runner.cleanup()


class Sleeps:
    """Stands in for asyncio.sleep: records each backoff delay, and does not wait."""

    def __init__(self):
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        await asyncio.sleep(0)


async def test_spec_headers_and_a_snappy_writerequest_body():
    async with receiving(Receiver()) as receiver, RemoteWriter(receiver.url) as writer:
        delivery = await writer.write("ams", "pi1", rich_results())
        assert await delivery is None
    headers = receiver.headers[0]
    for name in ("Content-Encoding", "Content-Type", "X-Prometheus-Remote-Write-Version"):
        assert headers[name] == HEADERS[name]
    assert headers["User-Agent"].startswith("courierwatch/")
    assert receiver.stored() == decode(Encoder().encode("ams", "pi1", rich_results())[0])
    assert writer.telemetry.sent == len(receiver.stored())


async def test_5xx_and_429_are_retried_with_backoff_honouring_retry_after():
    script = [(503, {}, "ingester down"), (429, {"Retry-After": "7"}, "slow down"),
              (500, {}, ""), (204, {}, "")]  # fmt: skip
    sleeps = Sleeps()
    backoff = Backoff(first=0.1, most=0.3)
    async with (
        receiving(Receiver(script)) as receiver,
        RemoteWriter(receiver.url, backoff=backoff, sleep=sleeps, draw=lambda: 0.999) as writer,
    ):
        delivery = await writer.write("ams", "pi1", [result(1)])
        assert await delivery is None
    assert len(receiver.requests) == 4
    assert all(request == receiver.requests[0] for request in receiver.requests)
    assert sleeps.delays[1] == 7.0  # Retry-After, longer than the backoff
    assert 0.1 * 0.5 <= sleeps.delays[0] <= 0.1
    assert sleeps.delays[2] == pytest.approx(0.3, rel=0.01)  # capped: 0.4 > most
    assert writer.telemetry.retries == {"503": 1, "429": 1, "500": 1}
    assert writer.telemetry.sent == len(receiver.requests[0])


async def test_connection_errors_are_retried_until_the_store_answers():
    receiver = Receiver()
    sleeps = Sleeps()
    async with receiving(receiver):
        url = receiver.url
    # Nothing listens there now: refused until the receiver is back on the same port.
    port = int(url.split(":")[2].split("/")[0])

    async def come_back(seconds):
        await sleeps(seconds)
        if len(sleeps.delays) == 3:
            app = web.Application()
            app.router.add_post("/api/v1/write", receiver.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            cleanup.append(runner)

    cleanup: list[web.AppRunner] = []
    try:
        async with RemoteWriter(url, sleep=come_back) as writer:
            assert await (await writer.write("ams", "pi1", [result(1)])) is None
    finally:
        for runner in cleanup:
            await runner.cleanup()
    assert writer.telemetry.retries["connection"] == 3
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("status", "text", "reason"),
    [
        (400, "out of bounds", "out_of_bounds"),
        (400, "duplicate sample for timestamp", "duplicate"),
        (400, "err-mimir-sample-out-of-order: the sample has been rejected", "out_of_order"),
        (422, "unprocessable", "rejected"),
        (413, "", "rejected"),
    ],
)
async def test_other_4xx_are_never_retried_and_counted_by_reason(status, text, reason):
    sleeps = Sleeps()
    async with (
        receiving(Receiver([(status, {}, text)])) as receiver,
        RemoteWriter(receiver.url, sleep=sleeps) as writer,
    ):
        delivery = await writer.write("ams", "pi1", [result(1)])
        assert await delivery == Rejection(status, reason)
        # The stream goes on: the next batch is sent and stored.
        assert await (await writer.write("ams", "pi1", [result(2)])) is None
    assert len(receiver.requests) == 2
    assert sleeps.delays == []
    samples = len(receiver.requests[0])
    assert writer.telemetry.failures == {(status, reason): 1}
    assert writer.telemetry.rejected == {(status, reason): samples}
    assert writer.telemetry.sent == len(receiver.requests[1])


async def test_a_rejection_is_logged_once_per_reason_per_minute(caplog):
    now = [0.0]
    script = [(400, {}, "out of bounds")] * 3 + [(400, {}, "out of order sample")]
    async with (
        receiving(Receiver(script)) as receiver,
        RemoteWriter(receiver.url, clock=lambda: now[0]) as writer,
    ):
        with caplog.at_level(logging.ERROR, "courierwatch.collector.remote.send"):
            for seq, at in ((1, 0.0), (2, 59.0), (3, 61.0), (4, 62.0)):
                now[0] = at
                assert await (await writer.write("ams", "pi1", [result(seq)])) is not None
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == 3, logged  # out of bounds at 0 and 61; out of order at 62
    assert sum("out of bounds" in line for line in logged) == 2


async def test_backpressure_a_write_waits_while_the_queue_is_full():
    """A slow store: writes queue up to the bound, then wait; none is lost or sent twice."""
    one = Encoder().encode("ams", "pi1", [result(1)])[1]  # samples per result
    receiver = Receiver()
    receiver.release.clear()  # the store holds its answers
    async with (
        receiving(receiver),
        RemoteWriter(receiver.url, max_queued_samples=3 * one, max_request_samples=one) as writer,
    ):
        first = await writer.write("ams", "pi1", [result(1)])
        await receiver.arrived.wait()  # in flight, held by the store
        queued = [await writer.write("ams", "pi1", [result(seq, at=NOW - seq)]) for seq in (2, 3)]
        waiting = asyncio.create_task(writer.write("ams", "pi1", [result(4, at=NOW - 4)]))
        for _ in range(20):
            await asyncio.sleep(0)  # lets the write run until it waits
        assert not waiting.done()
        assert writer.telemetry.queued == 3 * one
        receiver.release.set()
        deliveries = [first, *queued, await waiting]
        assert [await delivery for delivery in deliveries] == [None] * 4
    stored = receiver.stored()
    assert len(stored) == 4 * one
    assert len({(frozenset(labels.items()), ts) for labels, _, ts in stored}) == 4 * one
    assert writer.telemetry.queued == 0


async def test_memory_stays_bounded_with_many_writers_and_a_slow_store():
    per_write = Encoder().encode("ams", "p", rich_results())[1]
    limit = 5 * per_write
    receiver = Receiver()
    seen: list[int] = []
    async with (
        receiving(receiver),
        RemoteWriter(
            receiver.url, max_queued_samples=limit, max_request_samples=2 * per_write
        ) as writer,
    ):
        handle = receiver.handle

        async def slow(request):
            seen.append(writer.telemetry.queued)
            receiver.release.clear()
            answer = asyncio.create_task(handle(request))
            await asyncio.sleep(0)
            receiver.release.set()  # one request at a time, others queue behind it
            return await answer

        receiver.handle = slow

        async def probe(n):
            deliveries = [await writer.write("ams", f"p{n}", rich_results()) for _ in range(5)]
            seen.append(writer.telemetry.queued)
            return [await d for d in deliveries]

        outcomes = await asyncio.gather(*(probe(n) for n in range(20)))
    assert outcomes == [[None] * 5] * 20
    assert max(seen) <= limit
    assert len(receiver.stored()) == 20 * 5 * per_write
    assert max(len(request) for request in receiver.requests) <= 2 * per_write


async def test_a_write_larger_than_the_bound_goes_alone():
    receiver = Receiver()
    async with receiving(receiver), RemoteWriter(receiver.url, max_queued_samples=2) as writer:
        assert await (await writer.write("ams", "pi1", rich_results())) is None
    assert len(receiver.requests) == 1


async def test_close_fails_what_the_store_does_not_have():
    receiver = Receiver([(503, {}, "")] * 1000)
    async with receiving(receiver):
        writer = RemoteWriter(receiver.url, backoff=Backoff(first=0.001, most=0.001))
        async with writer:
            delivery = await writer.write("ams", "pi1", [result(1)])
            await receiver.arrived.wait()
            await writer.close(drain=0.0)
        with pytest.raises(Closed):
            await delivery
        with pytest.raises(Closed):
            await writer.write("ams", "pi1", [result(2)])


async def test_telemetry_is_valid_exposition_with_the_counts():
    script = [(503, {}, ""), (204, {}, ""), (400, {}, "out of bounds")]
    async with (
        receiving(Receiver(script)) as receiver,
        RemoteWriter(receiver.url, sleep=Sleeps()) as writer,
    ):
        sent = await writer.write("ams", "pi1", [result(1)])
        assert await sent is None
        refused = await writer.write("ams", "pi1", [result(2)])
        assert await refused == Rejection(400, "out_of_bounds")
    text = writer.telemetry.render()
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    one = len(receiver.requests[0])
    prefix = "courierwatch_remote_write_"
    assert values[(prefix + "samples_sent_total", ())] == one
    assert values[(prefix + "retries_total", (("reason", "503"),))] == 1
    rejected = (("reason", "out_of_bounds"), ("status", "400"))
    assert values[(prefix + "failures_total", rejected)] == 1
    assert values[(prefix + "samples_rejected_total", rejected)] == one
    assert values[(prefix + "queue_samples", ())] == 0
    assert values[(prefix + "request_duration_seconds_count", ())] == 3
    assert values[(prefix + "request_duration_seconds_bucket", (("le", "+Inf"),))] == 3


def test_retry_after_reads_seconds_and_dates():
    assert retry_after("12", 0.0) == 12.0
    assert retry_after(None, 0.0) is None
    assert retry_after("soon", 0.0) is None
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412470.0) == 10.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", 1445412490.0) == 0.0


def test_rejection_reads_what_stores_say():
    assert rejection(400, "out of bounds: sample too old") == Rejection(400, "out_of_bounds")
    assert rejection(400, "too old sample") == Rejection(400, "too_old")
    assert rejection(400, "ERR-MIMIR-SAMPLE-DUPLICATE-TIMESTAMP") == Rejection(400, "duplicate")
    assert rejection(404, "not found") == Rejection(404, "rejected")
    assert rejection(500, "too old sample") == Rejection(500, "too_old")  # Prometheus 2.42
    assert rejection(500, "internal error") is None
    assert rejection(503, "") is None
    assert rejection(429, "out of order: slow down") is None


def test_backoff_doubles_up_to_its_cap_and_jitters_in_its_upper_half():
    backoff = Backoff(first=1.0, most=8.0, most_retry_after=60.0)
    assert [backoff.delay(n, None, 0.999999) for n in range(6)] == pytest.approx(
        [1.0, 2.0, 4.0, 8.0, 8.0, 8.0], rel=1e-5
    )
    assert backoff.delay(2, None, 0.0) == 2.0
    assert backoff.delay(0, 3600.0, 0.5) == 60.0
    assert math.isfinite(backoff.delay(10_000, None, 0.5))
