"""A probe tells a busy collector from a stuck one (probe/uplink.py, collector/ingest.py), with
real processes: a probe whose ack timeout is ACK_TIMEOUT, and real collectors.

- Busy: a collector in remote-write mode whose store answers each request only after
  STORE_DELAY, several ack timeouts. The collector holds the probe's batches that long, and says
  Busy meanwhile: the probe keeps its one stream, and every result is posted to the store once.
  (Before Busy, the probe gave the stream up after each ack timeout and sent everything again:
  a slow store got each result several times, and a saturated collector more work.)
- Stuck: the probe's first collector is frozen (SIGSTOP): it says nothing, not even to
  keepalives, which would notice only after 40 s. The probe moves to the second within a few
  ack timeouts, and does not go back to the frozen one first.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import cramjam
import pytest
from aiohttp import web
from promserver import free_port
from test_remote_e2e import (
    collector_config,
    collector_process,
    drain_and_stop,
    make_fleet,
    metric,
    probe_config,
    status_probes,
    until,
    write_yaml,
)

from courierwatch.prompb import remote_pb2 as prompb
from processes import courierwatch

pytestmark = [pytest.mark.integration]

ACK_TIMEOUT = 1.0
STORE_DELAY = 3.5 * ACK_TIMEOUT  # before each answer while the store is slow


@dataclass
class SlowStore:
    """A remote-write receiver that answers 204 after `delay`, and counts how often each
    outcome sample (series and timestamp: one result) was posted."""

    delay: float = STORE_DELAY
    posted: Counter[tuple[tuple[tuple[str, str], ...], int]] = field(default_factory=Counter)
    write_url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(self.delay)  # the slowness itself, not a wait for something
        write = prompb.WriteRequest.FromString(bytes(cramjam.snappy.decompress_raw(body)))
        for series in write.timeseries:
            labels = tuple((label.name, label.value) for label in series.labels)
            if ("__name__", "courierwatch_check_outcome") in labels:
                self.posted.update((labels, sample.timestamp) for sample in series.samples)
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def slow_store() -> AsyncIterator[SlowStore]:
    store = SlowStore()
    app = web.Application()
    app.router.add_post("/api/v1/write", store.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    store.write_url = f"http://127.0.0.1:{port}/api/v1/write"
    try:
        yield store
    finally:
        await runner.cleanup()


async def stderr_of(process: asyncio.subprocess.Process) -> str:
    """What a stopped process logged."""
    assert process.stderr is not None and process.returncode is not None
    return (await process.stderr.read()).decode(errors="replace")


async def test_a_collector_waiting_on_a_slow_store_keeps_its_probe_with_busy(tmp_path, apple):
    probe_id = "pi-busy"
    fleet = make_fleet(tmp_path, [probe_id])
    uplink = {"ack_timeout": f"{ACK_TIMEOUT:g}s"}
    async with (
        slow_store() as store,
        collector_process(collector_config(tmp_path, "collector", fleet, store)) as (
            _, grpc_address, url),
        courierwatch("probe", "--config", probe_config(
            tmp_path, apple, fleet, probe_id, grpc_address, uplink=uplink)) as probe,
    ):  # fmt: skip

        def busy_said(times: float):
            async def check() -> bool:
                return await metric(url, "courierwatch_collector_busy_notices_total") >= times

            return check

        async def answered() -> bool:
            return bool(store.posted)

        await until("the collector says Busy", 10, busy_said(1))
        await until("a request answered slowly", 10, answered)
        # Held for several ack timeouts each time: the probe would have given up as often.
        await until("more Busy after it", 15, busy_said(3 * STORE_DELAY / ACK_TIMEOUT))
        store.delay = 0.0
        left, made = await drain_and_stop(tmp_path, probe_id, probe)
        applied = (await status_probes(url))[probe_id]["applied"]
        logged = await stderr_of(probe)

    assert left == 0
    assert "no acknowledgement" not in logged
    assert logged.count("streaming to collector") == 1, logged
    # Every result posted once: none sent again after a stream given up.
    assert set(store.posted.values()) == {1}
    assert len(store.posted) == made == applied


async def test_a_frozen_collector_loses_its_probe_to_the_next_within_the_ack_timeout(
    tmp_path, apple
):
    probe_id = "pi-stuck"
    fleet = make_fleet(tmp_path, [probe_id])

    def scrape_mode(name: str) -> str:
        return write_yaml(tmp_path / f"{name}.yaml", {
            "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
            "state_dir": str(tmp_path / f"{name}-state"),
            "transport": {"ca": fleet.ca, "cert": fleet.collector_cert,
                          "key": fleet.collector_key},
        })  # fmt: skip

    async def streaming_to(url: str) -> bool:
        view = (await status_probes(url)).get(probe_id)
        return view is not None and view["up"] and view["applied"] > 0

    async with (
        collector_process(scrape_mode("first")) as (first, first_grpc, first_url),
        collector_process(scrape_mode("second")) as (_, second_grpc, second_url),
    ):
        config = probe_config(tmp_path, apple, fleet, probe_id, [first_grpc, second_grpc],
                              uplink={"ack_timeout": f"{ACK_TIMEOUT:g}s"})  # fmt: skip
        async with courierwatch("probe", "--config", config) as probe:
            await until("the probe streams to the first", 20, lambda: streaming_to(first_url))
            first.send_signal(signal.SIGSTOP)
            try:
                # Keepalive alone: 30 s and 10 s more for the answer (probe/uplink.py); a try
                # of the frozen one again first, a Welcome timeout (15 s).
                await until("the probe moved to the second", 10, lambda: streaming_to(second_url))
                silent = await metric(second_url, "courierwatch_probe_collectors_silent_total")
            finally:
                first.send_signal(signal.SIGCONT)
            probe.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(probe.wait(), 15) == 0
            logged = await stderr_of(probe)

    gave_up = f"collector {first_grpc}: no acknowledgement for {ACK_TIMEOUT:g} s"
    assert gave_up in logged, logged
    # Counted by the probe, shown by the collector it moved to (its health beat).
    assert silent == 1
    # The frozen one was not tried again first: the next session after it, the second's.
    after = logged[logged.index(gave_up):].splitlines()[1:]
    sessions = [line for line in after
                if "streaming to collector" in line or f"collector {first_grpc}:" in line]
    assert sessions and sessions[0].endswith(f"streaming to collector {second_grpc}"), after
