"""The collector against what a fleet of unattended Pis meets, as real processes over mTLS: a
probe clock that steps, two probes with one identity, a full or corrupt store, hostile sizes,
silent streams, too many streams, HTTP clients that never finish, and SIGHUP."""

import asyncio
import contextlib
import resource
import shutil
import signal
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import grpc
import polling
import pytest
from test_spool_faults import fill, made_at_least, stepped_clock
from test_spool_faults import small_disk as small_disk  # a fixture
from test_transport import (
    SITE,
    Collector,
    applied_at_least,
    assert_exactly_once,
    drained,
    enroll,
    hello,
    last_seq,
    probe_config,
    secure_channel,
    totals,
)
from test_transport import fleet as fleet  # fixtures shared with the transport tests
from test_transport import listener as listener

from courierwatch.v1 import courierwatch_pb2 as pb
from processes import Samples, courierwatch, scrape

pytestmark = [pytest.mark.integration]

DAY = 86400.0


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the first series named `name` whose labels include `labels`."""
    for (series, pairs), number in samples.items():
        if series == name and labels.items() <= dict(pairs).items():
            return number
    return None


async def until(url: str, holds: Callable[[Samples], bool], seconds: float = 30) -> Samples:
    """Scrape until `holds(samples)`; fails with the last samples when it never does."""
    samples: Samples = {}

    async def scraped() -> Samples | None:
        nonlocal samples
        samples = await scrape(url)
        return samples if holds(samples) else None

    def last() -> str:
        ours = {k: v for k, v in samples.items() if k[0].startswith("courierwatch_")}
        return f"the scrape to hold; the last one: {ours}"

    # A collector starting or restarting refuses the connection or answers an error.
    return await polling.until(last, seconds, scraped, passing=(OSError, AssertionError))


async def stderr_of(collector: Collector) -> str:
    """Stop the collector; what it logged."""
    await collector.stop()
    return (await collector.process.stderr.read()).decode()


# --- time ----------------------------------------------------------------------------------


async def test_a_probe_clock_step_either_way_changes_no_current_state(tmp_path, fleet):
    """The issue's case: the probe's clock jumped two days ahead for a few seconds and back;
    the collector kept showing check_success 1 while the real results were `refused`."""
    offset, env = stepped_clock(tmp_path)
    target = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = str(target.getsockname()[1])
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-clock")
    config = probe_config(where, collector, int(port))
    success = {"probe": "pi-clock", "target": "127.0.0.1", "port": port}
    offset_of = "courierwatch_probe_clock_offset_seconds"
    async with courierwatch("probe", "--config", config, env=env) as probe:
        try:
            await until(collector.url, lambda s: value(s, "courierwatch_check_success",
                                                       **success) == 1)  # fmt: skip
            offset.write_text("+2d\n")
            await until(collector.url, lambda s: (value(s, offset_of) or 0) > 1.9 * DAY)
            offset.write_text("+0\n")
            await until(collector.url, lambda s: abs(value(s, offset_of) or DAY) < 60)
            target.close()  # from now on the check is refused
            samples = await until(collector.url, lambda s: value(
                s, "courierwatch_check_success", **success) == 0)  # fmt: skip
            assert value(samples, "courierwatch_check_outcome", outcome="refused",
                         **success) == 1  # fmt: skip
            offset.write_text("-2d\n")  # and behind: the state stays current, not stale
            await until(collector.url, lambda s: (value(s, offset_of) or 0) < -1.9 * DAY)
            samples = await scrape(collector.url)
            assert value(samples, "courierwatch_check_success", **success) == 0
            await drained(probe)
        finally:
            target.close()
    await collector.stop()


# --- identity ------------------------------------------------------------------------------


async def test_two_probes_with_one_identity_are_caught_and_lose_nothing(tmp_path, fleet,
                                                                         listener):
    """The issue's case: a cloned SD card. Both streams were accepted, each took the other's
    numbers for replays, acknowledged and deleted them."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    first = enroll(fleet, "pi-ams-1")
    clone = tmp_path / "clone"
    shutil.copytree(first, clone)
    async with courierwatch("probe", "--config", probe_config(first, collector, listener)) as a:
        await applied_at_least(collector.url, "pi-ams-1", 10)
        async with courierwatch("probe", "--config",
                                probe_config(clone, collector, listener)) as b:
            duplicate = {"site": SITE, "probe": "pi-ams-1"}
            await until(collector.url, lambda s: value(
                s, "courierwatch_probe_duplicate_identity", **duplicate) == 1)  # fmt: skip
            await applied_at_least(collector.url, "pi-ams-1", last_seq(first) + 10)
            await made_at_least(clone / "spool.sqlite", 10, b)
            b.send_signal(signal.SIGKILL)  # it never had a stream to drain to
            await b.wait()
        await drained(a)
    await assert_exactly_once(collector, first, "pi-ams-1")
    samples = await scrape(collector.url)
    assert value(samples, "courierwatch_collector_refused_total",
                 reason="duplicate_identity") >= 1  # fmt: skip
    with contextlib.closing(sqlite3.connect(clone / "spool.sqlite")) as db:
        kept = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    assert kept == last_seq(clone) > 0, "nothing of the clone's acknowledged: all still spooled"
    log = await stderr_of(collector)
    said = [line for line in log.splitlines() if "two probes use the identity pi-ams-1" in line]
    assert said and said[0].count("ipv4:127.0.0.1:") == 2, log


# --- the store -----------------------------------------------------------------------------


@pytest.mark.root(reason="mounts a small tmpfs")
async def test_a_full_store_stops_acknowledging_and_carries_on_by_itself(tmp_path, fleet,
                                                                         listener, small_disk):
    """The issue's case: `cannot commit to the state store: exiting`, and a restart loop."""
    collector = Collector(tmp_path, fleet, state_dir=str(small_disk))
    await collector.start()
    filler = fill(small_disk)
    where = enroll(fleet, "pi-full")
    health = f"http://{collector.http}/healthz"
    async with courierwatch("probe", "--config", probe_config(where, collector, listener)) as p:
        async with aiohttp.ClientSession() as session:

            async def unhealthy() -> str | None:
                async with session.get(health) as response:
                    return await response.text() if response.status == 503 else None

            said = await polling.until("/healthz answers 503", 30, unhealthy)
            assert "disk is full" in said
            made = last_seq(where)
            async with asyncio.timeout(30):  # the probe keeps measuring and spooling
                while last_seq(where) < made + 20:  # noqa: ASYNC110 - another process's file
                    await asyncio.sleep(0.2)
            assert collector.process.returncode is None
            filler.unlink()
            await applied_at_least(collector.url, "pi-full", last_seq(where) + 10)
            async with session.get(health) as response:
                assert response.status == 200
        await drained(p)
    await assert_exactly_once(collector, where, "pi-full")
    log = await stderr_of(collector)
    assert log.count("cannot commit to the state store") == 1, log
    assert "takes commits again" in log and "Traceback" not in log


async def test_a_corrupt_store_at_start_is_moved_aside_and_said_once(tmp_path, fleet,
                                                                     listener):
    collector = Collector(tmp_path, fleet)
    collector.state_dir.mkdir()
    (collector.state_dir / "collector.sqlite").write_bytes(b"not a database\n" * 500)
    await collector.start()
    where = enroll(fleet, "pi-after")
    async with courierwatch("probe", "--config",
                            probe_config(where, collector, listener)) as probe:
        await applied_at_least(collector.url, "pi-after", 10)
        await drained(probe)
    await assert_exactly_once(collector, where, "pi-after")
    log = await stderr_of(collector)
    (aside,) = collector.state_dir.glob("collector.sqlite.corrupt-*")
    said = [line for line in log.splitlines() if "moved it aside" in line]
    assert len(said) == 1 and " ERROR " in said[0] and aside.name in said[0], log
    assert "Traceback" not in log


# --- bounds --------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def test_one_identity_sending_huge_details_stays_bounded(tmp_path, fleet):
    """The issue's case: 1,000 checks with 400 KB details took the collector from 100 to
    474 MB. Each is cut on arrival now (the Welcome's max_string_bytes)."""
    collector = Collector(tmp_path, fleet, limits={"max_message_bytes": 1024 * 1024})
    await collector.start()
    where = enroll(fleet, "pi-huge")
    before = rss_bytes(collector.process.pid)
    detail = "x" * 400_000

    def batches():
        yield hello("pi-huge")
        for first in range(0, 1000, 2):
            yield pb.ProbeMessage(batch=pb.ResultBatch(results=[
                pb.Result(seq=first + n + 1, target=f"t{first + n}.example", port=443,
                          check="tls", group="g", detail=detail, interval_seconds=60)
                for n in range(2)
            ])).SerializeToString()  # fmt: skip

    async with secure_channel(fleet, where, collector.grpc) as channel:
        call = channel.stream_stream("/courierwatch.v1.Collector/Report",
                                     request_serializer=None,
                                     response_deserializer=pb.CollectorMessage.FromString,
                                     )(batches())  # fmt: skip
        acked, welcome = 0, None
        async with asyncio.timeout(60):
            async for message in call:
                if message.HasField("welcome"):
                    welcome = message.welcome
                else:
                    acked = message.ack.through_seq
                if acked == 1000:
                    break
        call.cancel()
    after = rss_bytes(collector.process.pid)
    samples = await scrape(collector.url)
    assert welcome.max_string_bytes == 1024 and welcome.idle_timeout_seconds == 30
    assert value(samples, "courierwatch_probe_results_applied_total", probe="pi-huge") == 1000
    assert value(samples, "courierwatch_collector_limited_total", reason="result_cut") == 1000
    held = value(samples, "courierwatch_probe_state_bytes", probe="pi-huge")
    assert held < 1000 * 1200, "about a KiB per check"
    print(f"collector RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB; state {held:.0f} B")
    assert after - before < 64 * 2**20
    await collector.stop()


async def silent_stream(channel: grpc.aio.Channel, probe_id: str, ended: asyncio.Event):
    """A Report stream that says Hello and then nothing; ends `ended` when the call does."""

    async def requests() -> AsyncIterator[bytes]:
        yield hello(probe_id)
        await ended.wait()

    call = channel.stream_stream("/courierwatch.v1.Collector/Report", request_serializer=None,
                                 response_deserializer=pb.CollectorMessage.FromString,
                                 )(requests())  # fmt: skip
    return call


async def status_of(call) -> grpc.StatusCode:
    """How the call ends, read to its end."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        while await call.read() is not grpc.aio.EOF:
            pass
    return await call.code()


async def test_silent_streams_are_closed_and_streams_are_capped(tmp_path, fleet):
    """The issue's case: a stream that says Hello and then nothing stayed open for ever, with
    courierwatch_probe_up 1; and there was no cap on streams."""
    collector = Collector(tmp_path, fleet, limits={"idle_timeout": "2s", "max_streams": 2})
    await collector.start()
    ended = asyncio.Event()
    probes = ["pi-silent-1", "pi-silent-2", "pi-silent-3"]
    channels = [secure_channel(fleet, enroll(fleet, p), collector.grpc) for p in probes]
    try:
        calls = [await silent_stream(channels[n], probes[n], ended) for n in range(2)]
        for call in calls:
            assert (await call.read()).HasField("welcome")
        up = {p: 1.0 for p in probes[:2]}
        samples = await scrape(collector.url)
        assert {p: value(samples, "courierwatch_probe_up", probe=p) for p in probes[:2]} == up
        third = await silent_stream(channels[2], probes[2], ended)
        assert await status_of(third) == grpc.StatusCode.RESOURCE_EXHAUSTED
        async with asyncio.timeout(10):  # five idle timeouts
            codes = await asyncio.gather(*(status_of(call) for call in calls))
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
        # The client may hear the status a moment before the collector has let go.
        samples = await until(collector.url, lambda s: [
            value(s, "courierwatch_probe_up", probe=p) for p in probes[:2]] == [0, 0])
        assert value(samples, "courierwatch_collector_refused_total", reason="idle") == 2
        assert value(samples, "courierwatch_collector_refused_total",
                     reason="too_many_streams") == 1  # fmt: skip
    finally:
        ended.set()
        for channel in channels:
            await channel.close()
    await collector.stop()


# --- HTTP clients --------------------------------------------------------------------------


async def test_http_clients_that_never_finish_are_closed_and_capped(tmp_path, fleet):
    """The issue's case: 1,000 clients that never finish their request were held open."""
    # A header timeout long enough that the 200 are still held when the 20 more arrive, however
    # slow the machine is in opening them.
    collector = Collector(tmp_path, fleet, limits={"http_header_timeout": "8s",
                                                   "max_http_connections": 210})
    await collector.start()
    host, port = collector.http.rsplit(":", 1)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 600, "room for this test's sockets"
    loop = asyncio.get_running_loop()

    async def partial() -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, int(port)))
        await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: collector\r\nX-Slow: ")
        return sock

    async def answer(sock: socket.socket) -> bytes:
        """What the server says before it closes the connection."""
        said = b""
        async with asyncio.timeout(40):  # five header timeouts
            while chunk := await loop.sock_recv(sock, 4096):
                said += chunk
        return said

    held = [await partial() for _ in range(200)]
    extra: list[socket.socket] = []
    try:
        samples = await scrape(collector.url)  # still answering, with 200 held
        assert value(samples, "courierwatch_config_last_reload_successful") == 1
        extra += [await partial() for _ in range(20)]
        turned = [said for said in await asyncio.gather(*(answer(s) for s in extra))
                  if said.startswith(b"HTTP/1.1 503")]  # fmt: skip
        assert len(turned) >= 10, "at most 210 open at once"
        closed = await asyncio.gather(*(answer(s) for s in held))
        assert all(b"HTTP/1.1 503" not in said for said in closed), "closed, not answered"
        samples = await scrape(collector.url)
        assert value(samples, "courierwatch_collector_limited_total",
                     reason="http_connections") >= 10  # fmt: skip
    finally:
        for sock in held + extra:
            sock.close()
    await collector.stop()


# --- SIGHUP --------------------------------------------------------------------------------


async def test_sighup_reloads_the_configuration_and_keeps_authorized_streams(tmp_path, fleet,
                                                                             listener):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    kept, dropped = enroll(fleet, "pi-kept"), enroll(fleet, "pi-dropped")
    reloaded = "courierwatch_config_last_reload_success_timestamp_seconds"
    async with courierwatch("probe", "--config", probe_config(kept, collector, listener)) as a, \
            courierwatch("probe", "--config", probe_config(dropped, collector, listener)):
        await applied_at_least(collector.url, "pi-kept", 5)
        await applied_at_least(collector.url, "pi-dropped", 5)
        started = value(await scrape(collector.url), reloaded)
        # pi-dropped may now report only for another site; limits change too.
        collector.write_config(authorization={"pi-dropped": ["elsewhere"]},
                               limits={"max_batch": 50})  # fmt: skip
        collector.process.send_signal(signal.SIGHUP)
        await until(collector.url, lambda s: value(s, reloaded) > started
                    and value(s, "courierwatch_probe_up", probe="pi-dropped") == 0)
        applied = (await totals(collector.url, "pi-kept"))[0]
        await applied_at_least(collector.url, "pi-kept", applied + 10)
        samples = await scrape(collector.url)
        assert value(samples, "courierwatch_config_last_reload_successful") == 1
        assert value(samples, "courierwatch_probe_up", probe="pi-kept") == 1
        assert value(samples, "courierwatch_collector_refused_total",
                     reason="unauthorized_site") >= 1  # fmt: skip

        collector.write_config(limits={"max_batch": 0})  # invalid
        collector.process.send_signal(signal.SIGHUP)
        await until(collector.url,
                    lambda s: value(s, "courierwatch_config_last_reload_successful") == 0)
        applied = (await totals(collector.url, "pi-kept"))[0]
        await applied_at_least(collector.url, "pi-kept", applied + 10)  # the old one runs on
        await drained(a)
    await assert_exactly_once(collector, kept, "pi-kept")
    log = await stderr_of(collector)
    assert log.count("probe ams-office/pi-kept connected") == 1, "its stream never dropped"
    failed = [line for line in log.splitlines() if "configuration not reloaded" in line]
    assert len(failed) == 1 and str(collector.config) in failed[0] and "max_batch" in failed[0]
    assert "Traceback" not in log
