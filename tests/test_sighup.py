"""SIGHUP reloads a running probe's configuration, in `courierwatch probe` and in `up`: a valid
file takes effect at once (targets come and go), on the same stream and with nothing spooled
lost; an invalid one is one error line and the running configuration carries on."""

import asyncio
import dataclasses
import random
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_scheduler import CTX, Probe, Sink, fake_kind  # noqa: F401 - fake_kind is a fixture
from test_transport import (  # noqa: F401 - fleet and listener are fixtures
    Collector,
    applied_at_least,
    assert_exactly_once,
    drained,
    enroll,
    fleet,
    free_port,
    last_seq,
    listener,
    probe_config,
)

from courierwatch.probe.scheduler import Scheduler
from courierwatch.probe.targets import Target
from processes import Samples, courierwatch, line_starting, scrape


class Log:
    """A child's stderr, read as it comes (so its pipe never fills), line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        assert process.stderr is not None
        self.lines: list[str] = []
        self._ended = False
        self._grew = asyncio.Condition()
        self._reading = asyncio.create_task(self._read(process.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            async with self._grew:
                self.lines.append(line.decode().rstrip("\n"))
                self._grew.notify_all()
        async with self._grew:
            self._ended = True
            self._grew.notify_all()

    async def whole(self) -> list[str]:
        """Every line, once the process has ended."""
        await asyncio.wait_for(self._reading, 30)
        return self.lines

    def having(self, text: str) -> list[str]:
        return [line for line in self.lines if text in line]

    async def wait_for(self, text: str, count: int = 1, seconds: float = 30) -> str:
        """The `count`th line with `text`; fails with the log if the process ends first."""
        async with asyncio.timeout(seconds), self._grew:
            await self._grew.wait_for(lambda: len(self.having(text)) >= count or self._ended)
        found = self.having(text)
        assert len(found) >= count, f"the process ended without {text!r}:\n" + "\n".join(
            self.lines[-30:]
        )
        return found[count - 1]


def tcp(port: int) -> dict:
    """A check of a port on loopback, as often as the config allows."""
    return {"host": "127.0.0.1", "port": port, "check": "tcp", "interval": "1s",
            "timeout": "500ms"}  # fmt: skip


def edit(path: str, change: Callable[[dict], None]) -> None:
    config = yaml.safe_load(Path(path).read_text())
    change(config)
    Path(path).write_text(yaml.safe_dump(config))


def add_target(path: str, port: int) -> None:
    edit(path, lambda config: config["targets"].append(tcp(port)))


def up_config(path: str, port: int) -> None:
    Path(path).write_text(yaml.safe_dump({
        "catalog": {"groups": []}, "families": ["ipv4"], "targets": [tcp(port)],
    }))  # fmt: skip


async def results_arrive(url: str, port: int, seconds: float = 30) -> None:
    """Until the collector has counted a result of the check of `port`."""
    async with asyncio.timeout(seconds):
        while not counted(await scrape(url), port):  # noqa: ASYNC110 - another process's state
            await asyncio.sleep(0.2)


def counted(samples: Samples, port: int) -> bool:
    return any(name == "courierwatch_check_results_total" and ("port", str(port)) in labels
               for name, labels in samples)  # fmt: skip


@pytest.mark.integration
async def test_a_good_config_adds_a_target_on_the_same_stream_and_loses_nothing(
    tmp_path, fleet, listener  # noqa: F811 - fixtures
):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-reload")
    path = probe_config(where, collector, listener, targets=[tcp(listener)])
    async with courierwatch("probe", "--config", path) as probe:
        log = Log(probe)
        await applied_at_least(collector.url, "pi-reload", 1)  # streaming
        with socket.create_server(("127.0.0.1", 0)) as other:
            added = other.getsockname()[1]
            add_target(path, added)
            probe.send_signal(signal.SIGHUP)
            reloaded = await log.wait_for("reloaded ")
            assert "2 checks; 1 added, 0 removed, 0 changed; stream kept" in reloaded
            await results_arrive(collector.url, added)
        await drained(probe)
    await log.whole()
    assert len(log.having("streaming to collector")) == 1, "the stream was never restarted"
    await assert_exactly_once(collector, where, "pi-reload")
    await collector.stop()


@pytest.mark.integration
async def test_a_bad_config_is_one_error_line_and_the_old_one_runs_on(
    tmp_path, fleet, listener  # noqa: F811 - fixtures
):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-typo")
    path = probe_config(where, collector, listener, targets=[tcp(listener)])
    async with courierwatch("probe", "--config", path) as probe:
        log = Log(probe)
        await applied_at_least(collector.url, "pi-typo", 1)  # streaming
        edit(path, lambda config: config["targets"][0].update(port=99999))
        probe.send_signal(signal.SIGHUP)
        failed = await log.wait_for("reload failed")
        assert f"{path}:" in failed and "targets[0].port: must be an integer" in failed
        # Still checking and sending: a result made after the failed reload arrives.
        await applied_at_least(collector.url, "pi-typo", last_seq(where) + 1)
        assert probe.returncode is None
        await drained(probe)
    assert [line for line in await log.whole() if " ERROR " in line] == [failed]
    assert not log.having("Traceback")
    assert len(log.having("streaming to collector")) == 1
    await assert_exactly_once(collector, where, "pi-typo")
    await collector.stop()


@pytest.mark.integration
async def test_new_collectors_reconnect_cleanly_and_lose_nothing(
    tmp_path, fleet, listener  # noqa: F811 - fixtures
):
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-failover")
    path = probe_config(where, collector, listener, targets=[tcp(listener)])
    async with courierwatch("probe", "--config", path) as probe:
        log = Log(probe)
        await applied_at_least(collector.url, "pi-failover", 1)  # streaming
        edit(path, lambda config: config["collectors"].append(f"127.0.0.1:{free_port()}"))
        probe.send_signal(signal.SIGHUP)
        assert "reconnecting: collectors changed" in await log.wait_for("reloaded ")
        await log.wait_for("streaming to collector", count=2)
        await applied_at_least(collector.url, "pi-failover", last_seq(where) + 1)
        await drained(probe)
    await assert_exactly_once(collector, where, "pi-failover")
    await collector.stop()


@pytest.mark.integration
async def test_up_reloads_its_probe_on_sighup(tmp_path, listener):  # noqa: F811 - a fixture
    path = str(tmp_path / "probe.yaml")
    up_config(path, listener)
    async with courierwatch("up", "--config", path, "--http", "127.0.0.1:0",
                            "--grpc", "127.0.0.1:0") as up:  # fmt: skip
        log = Log(up)
        url = (await line_starting(up, "Metrics: ", 15)).removeprefix("Metrics: ")
        await results_arrive(url, listener)
        with socket.create_server(("127.0.0.1", 0)) as other:
            added = other.getsockname()[1]
            add_target(path, added)
            up.send_signal(signal.SIGHUP)
            assert "1 added" in await log.wait_for("reloaded ")
            await results_arrive(url, added)
        assert up.returncode is None
    await log.whole()
    assert len(log.having("streaming to collector")) == 1


async def test_the_scheduler_swaps_targets_and_keeps_the_unchanged_ones_running(fake_kind):  # noqa: F811
    kind = fake_kind(Probe())
    kept, gone, slower, new = (Target(host=f"192.0.2.{i}", port=1, check="fake", interval=0.05,
                                      timeout=0.04) for i in range(4))  # fmt: skip
    sink = Sink(1)
    scheduler = Scheduler([kept, gone, slower], CTX, sink, jitter=0.0, startup_spread=0.01,
                          rng=random.Random(3))  # fmt: skip
    running = asyncio.create_task(scheduler.run())
    await asyncio.wait_for(sink.enough.wait(), 10)
    changes = scheduler.update([kept, dataclasses.replace(slower, interval=0.06), new], CTX,
                               concurrency=4, jitter=0.0)  # fmt: skip
    assert (changes.added, changes.removed, changes.changed) == (1, 1, 1)
    at_update = len(kind.starts)
    sink.count, sink.enough = len(sink) + 12, asyncio.Event()
    await asyncio.wait_for(sink.enough.wait(), 10)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    since = {host for _, host in kind.starts[at_update:]}
    assert since == {kept.host, slower.host, new.host}  # the one that went never ran again
