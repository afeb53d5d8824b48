"""Issue 11's defects shown on the code before the fixes: behavioural checks that use only
what both the old (ac734f6) and the new code have (no metric, option or API the fixes
introduced), so a failure on old code is the defect itself, not a missing name. Not part of
the suite (the suite's own tests cover each defect); how to run it on both, and the record
of a run: README.md here.

    .venv/bin/python -m pytest tests/before/defects.py -p no:cacheprovider    # as root
"""

import asyncio
import contextlib
import os
import resource
import shutil
import signal
import socket
import sqlite3

import grpc
import pytest
import yaml
from test_collector_faults import rss_bytes, silent_stream, status_of, until, value
from test_spool_faults import fill, libfaketime, made_at_least
from test_spool_faults import small_disk as small_disk  # a fixture
from test_transport import (
    Collector,
    applied_at_least,
    drained,
    enroll,
    hello,
    last_seq,
    probe_config,
    secure_channel,
    totals,
)
from test_transport import fleet as fleet  # fixtures
from test_transport import listener as listener

from courierwatch.v1 import courierwatch_pb2 as pb
from processes import courierwatch, line_starting, scrape

pytestmark = [pytest.mark.integration]


async def test_clock_step_ahead_and_back_then_refused_shows(tmp_path, fleet):
    """Defect 1 (collector): +2 d for a few seconds, back, then the target refuses."""
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    env = {**os.environ, "LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    target = socket.create_server(("127.0.0.1", 0), backlog=128)
    port = str(target.getsockname()[1])
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-clock")
    config = probe_config(where, collector, int(port))
    success = {"probe": "pi-clock", "target": "127.0.0.1", "port": port}
    async with courierwatch("probe", "--config", config, env=env) as probe:
        try:
            await until(collector.url,
                        lambda s: value(s, "courierwatch_check_success", **success) == 1)
            offset.write_text("+2d\n")
            # Results made under the step (10 a second) have been applied.
            await applied_at_least(collector.url, "pi-clock", last_seq(where) + 30)
            offset.write_text("+0\n")
            await applied_at_least(collector.url, "pi-clock", last_seq(where) + 30)
            target.close()  # from now on the check is refused
            applied = (await totals(collector.url, "pi-clock"))[0]
            # 60 more applied: about six of them are this target's, each refused.
            await applied_at_least(collector.url, "pi-clock", applied + 60)
            samples = await scrape(collector.url)
            assert value(samples, "courierwatch_check_success", **success) == 0, (
                "check_success still 1 after about six refused results of it were applied"
            )
            await drained(probe)
        finally:
            target.close()
    await collector.stop()


async def test_two_probes_one_identity_nothing_acknowledged_unapplied(tmp_path, fleet,
                                                                       listener):
    """Defect 2: every result either probe had acknowledged (deleted from its spool) was
    applied by the collector, once."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    first = enroll(fleet, "pi-ams-1")
    clone = tmp_path / "clone"
    shutil.copytree(first, clone)
    async with courierwatch("probe", "--config", probe_config(first, collector, listener)) as a:
        await applied_at_least(collector.url, "pi-ams-1", 30)
        async with courierwatch("probe", "--config",
                                probe_config(clone, collector, listener)) as b:
            await made_at_least(clone / "spool.sqlite", 40, b)
            await applied_at_least(collector.url, "pi-ams-1", last_seq(first) + 10)
            b.send_signal(signal.SIGKILL)
            await b.wait()
        await drained(a)
    with contextlib.closing(sqlite3.connect(clone / "spool.sqlite")) as db:
        kept = db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    acked_by_clone = last_seq(clone) - kept
    applied, _ = await totals(collector.url, "pi-ams-1")
    await collector.stop()
    assert applied == last_seq(first) + acked_by_clone, (
        f"applied {applied} != first's {last_seq(first)} + clone's acknowledged "
        f"{acked_by_clone} (clone made {last_seq(clone)}, still spooled {kept})"
    )


@pytest.mark.root(reason="mounts a small tmpfs")
async def test_a_full_store_leaves_the_collector_running(tmp_path, fleet, listener,
                                                         small_disk):
    """Defect 4 (collector store full): the collector must not exit."""
    collector = Collector(tmp_path, fleet, state_dir=str(small_disk))
    await collector.start()
    filler = fill(small_disk)
    where = enroll(fleet, "pi-full")
    async with courierwatch("probe", "--config", probe_config(where, collector, listener)) as p:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collector.process.wait(), 20)
        code = collector.process.returncode
        filler.unlink()
        if code is not None:
            said = (await collector.process.stderr.read()).decode().strip().splitlines()
            p.send_signal(signal.SIGKILL)
            await p.wait()
            pytest.fail(f"collector exited with {code} on a full store; last log line: "
                        f"{said[-1] if said else ''!r}")
        await drained(p)
    await collector.stop()


async def test_huge_details_leave_collector_memory_bounded(tmp_path, fleet):
    """Defect 6: 1,000 checks with 400 KB details from one identity."""
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
            ])).SerializeToString()

    async with secure_channel(fleet, where, collector.grpc) as channel:
        call = channel.stream_stream("/courierwatch.v1.Collector/Report",
                                     request_serializer=None,
                                     response_deserializer=pb.CollectorMessage.FromString,
                                     )(batches())
        acked = 0
        async with asyncio.timeout(60):
            async for message in call:
                if message.HasField("ack"):
                    acked = message.ack.through_seq
                if acked == 1000:
                    break
        call.cancel()
    after = rss_bytes(collector.process.pid)
    samples = await scrape(collector.url)
    await collector.stop()
    assert value(samples, "courierwatch_probe_results_applied_total", probe="pi-huge") == 1000
    assert after - before < 64 * 2**20, (
        f"collector RSS {before / 2**20:.0f} MB -> {after / 2**20:.0f} MB"
    )


async def test_a_silent_stream_is_closed_with_default_limits(tmp_path, fleet):
    """Defect 7: Hello, then nothing, with the collector's default configuration (the new
    default idle deadline is 30 s; this waits 75 s)."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    ended = asyncio.Event()
    channel = secure_channel(fleet, enroll(fleet, "pi-silent"), collector.grpc)
    try:
        call = await silent_stream(channel, "pi-silent", ended)
        assert (await call.read()).HasField("welcome")
        # Not asyncio.timeout: cancelling the read would cancel the call itself.
        ending = asyncio.create_task(status_of(call))
        done, _ = await asyncio.wait({ending}, timeout=75)
        if not done:
            samples = await scrape(collector.url)  # while the stream is still open
            ending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ending
            pytest.fail("silent stream still open after 75 s; courierwatch_probe_up = "
                        f"{value(samples, 'courierwatch_probe_up', probe='pi-silent')}")
        assert ending.result() == grpc.StatusCode.DEADLINE_EXCEEDED
        samples = await until(collector.url,
                              lambda s: value(s, "courierwatch_probe_up", probe="pi-silent") == 0)
    finally:
        ended.set()
        await channel.close()
    await collector.stop()


async def test_http_clients_that_never_finish_are_closed_with_default_limits(tmp_path, fleet):
    """Defect 9: 50 clients send half a request header, with the default configuration (the
    new default header timeout is 10 s; this waits 40 s for the server to close them)."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    host, port = collector.http.rsplit(":", 1)
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 200
    loop = asyncio.get_running_loop()

    async def partial() -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, int(port)))
        await loop.sock_sendall(sock, b"GET /metrics HTTP/1.1\r\nHost: collector\r\nX-Slow: ")
        return sock

    async def closed(sock: socket.socket) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(40):
                while await loop.sock_recv(sock, 4096):
                    pass
                return True
        return False

    held = [await partial() for _ in range(50)]
    try:
        ended = await asyncio.gather(*(closed(s) for s in held))
    finally:
        for sock in held:
            sock.close()
    await collector.stop()
    assert all(ended), f"{ended.count(False)} of 50 half-sent requests still open after 40 s"


async def alive_after_sighup(process: asyncio.subprocess.Process, seconds: float = 5) -> None:
    process.send_signal(signal.SIGHUP)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), seconds)
    assert process.returncode is None, (
        f"ended by SIGHUP: returncode {process.returncode} (a shell's exit status "
        f"{128 - process.returncode if process.returncode < 0 else process.returncode})"
    )


async def test_sighup_leaves_the_collector_running(tmp_path, fleet):
    """Defect 5, collector: the same, unchanged config file, and SIGHUP."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    await alive_after_sighup(collector.process)
    await collector.stop()


async def test_sighup_leaves_the_probe_running(tmp_path, fleet, listener):
    """Defect 5, probe."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-hup")
    async with courierwatch("probe", "--config", probe_config(where, collector, listener)) as p:
        await applied_at_least(collector.url, "pi-hup", 5)
        await alive_after_sighup(p)
        await drained(p)
    await collector.stop()


async def test_sighup_leaves_up_running(tmp_path, listener):
    """Defect 5, up."""
    path = tmp_path / "probe.yaml"
    path.write_text(yaml.safe_dump({
        "catalog": {"groups": []}, "families": ["ipv4"],
        "targets": [{"host": "127.0.0.1", "port": listener, "check": "tcp", "interval": "1s",
                     "timeout": "500ms"}],
    }))
    async with courierwatch("up", "--config", str(path), "--http", "127.0.0.1:0",
                            "--grpc", "127.0.0.1:0") as up:
        await line_starting(up, "Metrics: ", 15)
        await alive_after_sighup(up)



async def applied_or_ended(url: str, probe_id: str, n: int,
                           probe: asyncio.subprocess.Process, seconds: float) -> str | None:
    """None once `n` results of `probe_id` are applied; else what went wrong, in one line."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while probe.returncode is None:
                with contextlib.suppress(KeyError, OSError):
                    if (await totals(url, probe_id))[0] >= n:
                        return None
                await asyncio.sleep(0.2)
    try:
        applied = (await totals(url, probe_id))[0]
    except KeyError:
        applied = 0
    if probe.returncode is None:
        probe.send_signal(signal.SIGKILL)
        await probe.wait()
        ended = "still running (killed now)"
    else:
        ended = f"exited with {probe.returncode}"
    log = (await probe.stderr.read()).decode().splitlines()
    streams = sum("streaming to collector" in line for line in log)
    errors = [line for line in log if line.strip() and not line.startswith(" ")]
    return (f"{applied:.0f} of {n} applied after {seconds} s; probe {ended}; "
            f"'streaming to collector' x{streams}; last line: {(errors or [''])[-1][:300]!r}")


async def test_a_poison_row_does_not_hold_back_the_rest(tmp_path, fleet, listener):
    """Defect 3: one unreadable row in the spool (the new test also adds an oversized one;
    this is only the unreadable row the issue names)."""
    collector = Collector(tmp_path, fleet)
    where = enroll(fleet, "pi-poison")
    spool = where / "spool.sqlite"
    config = probe_config(where, collector, listener)
    async with courierwatch("probe", "--config", config) as probe:
        await made_at_least(spool, 30, probe)
        probe.send_signal(signal.SIGKILL)
        await probe.wait()
    with contextlib.closing(sqlite3.connect(spool)) as db, db:
        db.execute("UPDATE results SET body = x'ffffff' WHERE seq = 5")
    await collector.start()
    async with courierwatch("probe", "--config", config) as probe:
        with contextlib.closing(sqlite3.connect(spool)) as db:
            made = db.execute("SELECT value FROM meta WHERE name = 'last_seq'").fetchone()[0]
        wrong = await applied_or_ended(collector.url, "pi-poison", made + 10, probe, 30)
        if wrong is None:
            await drained(probe)
    await collector.stop()
    assert wrong is None, wrong


@pytest.mark.parametrize("damage", [b"not a database\n" * 500, b""], ids=["garbage", "empty"])
async def test_a_probe_starts_on_a_corrupt_spool(tmp_path, fleet, listener, damage):
    """Defect 4 (corrupt spool at start)."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-corrupt")
    if damage:
        (where / "spool.sqlite").write_bytes(damage)
    async with courierwatch("probe", "--config",
                            probe_config(where, collector, listener)) as probe:
        wrong = await applied_or_ended(collector.url, "pi-corrupt", 10, probe, 30)
        if wrong is None:
            await drained(probe)
    await collector.stop()
    assert wrong is None, wrong
