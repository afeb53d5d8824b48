"""Transport you can trust, with real processes over a real mTLS gRPC channel: outages,
crashes and restarts lose nothing and double nothing; identities are enforced; bad input
ends only the stream that sent it."""

import asyncio
import signal
import socket
import sqlite3
import tarfile
from pathlib import Path

import grpc
import pytest
import yaml
from polling import until

from courierwatch import pki
from courierwatch.v1 import courierwatch_pb2 as pb
from processes import courierwatch, key, line_starting, scrape

pytestmark = [pytest.mark.integration]

SITE = "ams-office"


@pytest.fixture
def fleet(tmp_path) -> Path:
    directory = tmp_path / "pki"
    pki.create_ca(directory, name="test fleet CA", days=30)
    pki.issue_collector(directory, ["127.0.0.1"], days=30)
    return directory


def enroll(fleet: Path, probe_id: str, site: str = SITE) -> Path:
    """Unpack a probe bundle as an operator would; returns its directory."""
    bundle = pki.probe_bundle(fleet, site=site, probe_id=probe_id,
                              collectors=["127.0.0.1:1"], days=30)
    where = fleet.parent / f"{fleet.name}-{probe_id}"
    where.mkdir()
    (where / "bundle.tar.gz").write_bytes(bundle)
    with tarfile.open(where / "bundle.tar.gz") as tar:
        tar.extractall(where, filter="data")
    return where


@pytest.fixture
def listener():
    """A TCP port that accepts (checks against it succeed); loopback only."""
    with socket.create_server(("127.0.0.1", 0), backlog=128) as server:
        yield server.getsockname()[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Collector:
    """A collector process that can be stopped, killed and started again on the same ports.
    `limits` and the other keyword arguments go into its config file (see write_config)."""

    def __init__(self, tmp_path: Path, fleet: Path, **config) -> None:
        self.grpc = f"127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}"
        self.config = tmp_path / "collector.yaml"
        self.fleet, self.state_dir = fleet, tmp_path / "collector-state"
        self.write_config(**config)
        self.url = f"http://{self.http}/metrics"
        self._run = None
        self.process = None

    def write_config(self, *, limits=None, **config) -> None:
        fleet = self.fleet
        self.config.write_text(yaml.safe_dump({
            "listen": {"grpc": self.grpc, "http": self.http},
            "transport": {"ca": str(fleet / "ca.pem"), "cert": str(fleet / "collector.pem"),
                          "key": str(fleet / "collector.key")},
            "state_dir": str(self.state_dir),
            "limits": {"max_message_bytes": 65536, "max_batch": 100, **(limits or {})},
            **config,
        }))

    async def start(self):
        self._run = courierwatch("collector", "--config", str(self.config))
        self.process = await self._run.__aenter__()
        await line_starting(self.process, "collector ready:", 15)

    async def stop(self, how=signal.SIGTERM):
        self.process.send_signal(how)
        await asyncio.wait_for(self.process.wait(), 15)
        await self._run.__aexit__(None, None, None)


def probe_config(where: Path, collector: Collector, listener: int, **overrides) -> str:
    config = yaml.safe_load((where / "probe.yaml").read_text())
    closed = free_port()
    config.update({
        "collectors": [collector.grpc],
        "catalog": {"groups": []},
        "spool": {"path": str(where / "spool.sqlite")},
        # IP literals: these tests are about transport, not DNS. Ten checks a second at the
        # shortest interval the config takes: one that works, nine refused at once.
        "targets": [
            {"host": "127.0.0.1", "port": listener, "check": "tcp", "interval": "1s",
             "timeout": "0.5s"},
            *({"host": f"127.0.0.{n}", "port": closed, "check": "tcp", "interval": "1s",
               "timeout": "0.5s"} for n in range(2, 11)),
        ],
        **overrides,
    })
    (where / "probe.yaml").write_text(yaml.safe_dump(config))
    return str(where / "probe.yaml")


def last_seq(where: Path) -> int:
    """How many results the probe has made: its spool never reuses a number."""
    with sqlite3.connect(where / "spool.sqlite") as db:
        return db.execute("SELECT value FROM meta WHERE name = 'last_seq'").fetchone()[0]


async def totals(url: str, probe_id: str, site: str = SITE) -> tuple[float, float]:
    samples = await scrape(url)
    applied = samples[key("courierwatch_probe_results_applied_total", site=site, probe=probe_id)]
    counted = sum(v for (name, labels), v in samples.items()
                  if name == "courierwatch_check_results_total"
                  and dict(labels).get("probe") == probe_id)
    return applied, counted


async def applied_at_least(url: str, probe_id: str, n: int, seconds: float = 30) -> None:
    async def applied() -> bool:
        return (await totals(url, probe_id))[0] >= n

    # KeyError: not connected yet; OSError: the collector is restarting.
    await until(f"{probe_id} applied {n}", seconds, applied, passing=(KeyError, OSError))


async def drained(probe: asyncio.subprocess.Process) -> None:
    """SIGTERM: the probe flushes its spool, waits for the acks and exits cleanly."""
    probe.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(probe.wait(), 20) == 0


async def assert_exactly_once(collector: Collector, where: Path, probe_id: str) -> None:
    made = last_seq(where)
    assert made > 0
    applied, counted = await totals(collector.url, probe_id)
    assert applied == made, "every result the probe made arrived, once"
    assert counted == made, "the counters equal the number of checks run"


async def test_collector_outage_loses_nothing(tmp_path, fleet, listener):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-outage")
    async with courierwatch("probe", "--config",
                            probe_config(where, collector, listener)) as probe:
        await applied_at_least(collector.url, "pi-outage", 10)
        await collector.stop()
        # The probe keeps checking while the collector is away: its spool grows.
        before = last_seq(where)
        async with asyncio.timeout(20):
            while last_seq(where) < before + 20:  # noqa: ASYNC110 - another process's file
                await asyncio.sleep(0.2)
        await collector.start()
        await applied_at_least(collector.url, "pi-outage", last_seq(where))
        probe.send_signal(signal.SIGTERM)  # drains: what is spooled gets acknowledged
        assert await asyncio.wait_for(probe.wait(), 20) == 0
    await assert_exactly_once(collector, where, "pi-outage")
    await collector.stop()


async def test_probe_killed_mid_stream_resends_what_was_not_acknowledged(
    tmp_path, fleet, listener
):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-killed")
    config = probe_config(where, collector, listener)
    async with courierwatch("probe", "--config", config) as probe:
        await applied_at_least(collector.url, "pi-killed", 15)
        probe.send_signal(signal.SIGKILL)
        await probe.wait()
    async with courierwatch("probe", "--config", config) as probe:
        await applied_at_least(collector.url, "pi-killed", last_seq(where) + 10)
        await drained(probe)
    await assert_exactly_once(collector, where, "pi-killed")
    await collector.stop()


async def test_collector_killed_mid_stream_neither_loses_nor_doubles(tmp_path, fleet, listener):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-steady")
    async with courierwatch("probe", "--config",
                            probe_config(where, collector, listener)) as probe:
        await applied_at_least(collector.url, "pi-steady", 15)
        await collector.stop(signal.SIGKILL)
        await collector.start()
        await applied_at_least(collector.url, "pi-steady", last_seq(where) + 10)
        await drained(probe)
    await assert_exactly_once(collector, where, "pi-steady")
    await collector.stop()


def secure_channel(fleet: Path, where: Path | None, target: str) -> grpc.aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(fleet / "ca.pem").read_bytes(),
        private_key=(where / "probe.key").read_bytes() if where else None,
        certificate_chain=(where / "probe.pem").read_bytes() if where else None,
    )
    return grpc.aio.secure_channel(target, credentials)


async def report(channel: grpc.aio.Channel, *messages: bytes) -> grpc.StatusCode:
    """Send raw messages on a Report stream; the status it ends with."""
    call = channel.stream_stream(
        "/courierwatch.v1.Collector/Report",
        request_serializer=None, response_deserializer=pb.CollectorMessage.FromString,
    )(iter(messages))
    try:
        async with asyncio.timeout(10):
            async for _ in call:
                pass
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def hello(probe_id: str, site: str = SITE) -> bytes:
    return pb.ProbeMessage(hello=pb.Hello(probe_id=probe_id, site=site)).SerializeToString()


async def test_identity_comes_from_the_certificate_and_refusals_are_counted(tmp_path, fleet):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    ams = enroll(fleet, "pi-ams")
    async with secure_channel(fleet, ams, collector.grpc) as channel:
        assert await report(channel, hello("pi-ams", site="nyc-office")) == \
            grpc.StatusCode.PERMISSION_DENIED
        assert await report(channel, hello("pi-other")) == grpc.StatusCode.PERMISSION_DENIED
    # No certificate, or one from another CA: the TLS handshake itself fails.
    async with secure_channel(fleet, None, collector.grpc) as channel:
        assert await report(channel, hello("pi-ams")) == grpc.StatusCode.UNAVAILABLE
    foreign = tmp_path / "foreign"
    pki.create_ca(foreign, name="someone else", days=30)
    stranger = enroll(foreign, "pi-ams")
    (stranger / "ca.pem").write_bytes((fleet / "ca.pem").read_bytes())
    async with secure_channel(fleet, stranger, collector.grpc) as channel:
        assert await report(channel, hello("pi-ams")) == grpc.StatusCode.UNAVAILABLE

    samples = await scrape(collector.url)
    assert samples[key("courierwatch_collector_refused_total", reason="unauthorized_site")] == 1
    assert samples[key("courierwatch_collector_refused_total", reason="identity_mismatch")] == 1
    assert not any(dict(labels).get("site") == "nyc-office" for _, labels in samples)
    await collector.stop()


async def test_bad_input_is_refused_while_other_probes_stream_on(tmp_path, fleet, listener):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    good = enroll(fleet, "pi-good")
    bad = enroll(fleet, "pi-bad")
    async with courierwatch("probe", "--config", probe_config(good, collector, listener)):
        await applied_at_least(collector.url, "pi-good", 5)
        oversized = pb.ProbeMessage(batch=pb.ResultBatch(results=[
            pb.Result(seq=1, target="x" * 100, port=1, check="tcp") for _ in range(1000)
        ])).SerializeToString()
        too_long = pb.ProbeMessage(batch=pb.ResultBatch(results=[
            pb.Result(seq=i + 1, target="a", port=1, check="tcp") for i in range(101)
        ])).SerializeToString()
        long_label = pb.ProbeMessage(batch=pb.ResultBatch(results=[
            pb.Result(seq=1, target="a" * 1000, port=1, check="tcp")
        ])).SerializeToString()
        async with secure_channel(fleet, bad, collector.grpc) as channel:
            assert await report(channel, hello("pi-bad"), b"\xff\xff\xff") == \
                grpc.StatusCode.INVALID_ARGUMENT
            assert await report(channel, hello("pi-bad"), oversized) == \
                grpc.StatusCode.RESOURCE_EXHAUSTED
            assert await report(channel, hello("pi-bad"), too_long) == \
                grpc.StatusCode.INVALID_ARGUMENT
            assert await report(channel, hello("pi-bad"), long_label) == \
                grpc.StatusCode.INVALID_ARGUMENT
            assert await report(channel, b"") == grpc.StatusCode.INVALID_ARGUMENT
        applied_then = (await totals(collector.url, "pi-good"))[0]
        await applied_at_least(collector.url, "pi-good", applied_then + 5)
        samples = await scrape(collector.url)
        for reason in ("malformed", "oversized", "batch_too_long", "label_too_long", "no_hello"):
            assert samples[key("courierwatch_collector_refused_total", reason=reason)] == 1
        assert samples[key("courierwatch_probe_results_applied_total", site=SITE,
                           probe="pi-bad")] == 0
    await collector.stop()


async def test_a_new_spool_for_a_known_probe_is_renumbered_not_swallowed(
    tmp_path, fleet, listener
):
    """A re-imaged SD card: the collector has applied more of this probe than the new spool
    ever numbered. Its results must still arrive, not be taken for replays."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-reimaged")
    config = probe_config(where, collector, listener)
    async with courierwatch("probe", "--config", config) as probe:
        await applied_at_least(collector.url, "pi-reimaged", 30)
        await drained(probe)
    before = (await totals(collector.url, "pi-reimaged"))[0]
    (where / "spool.sqlite").unlink()
    for leftover in where.glob("spool.sqlite-*"):
        leftover.unlink()
    async with courierwatch("probe", "--config", config):
        await applied_at_least(collector.url, "pi-reimaged", before + 10)
    await collector.stop()
