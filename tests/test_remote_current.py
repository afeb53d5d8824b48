"""Remote-write mode's probe state (collector/remote/current.py): each live probe's
probe-level families, written at the collector's time with /metrics' names, labels and
values; nothing of a probe without a stream, nothing of the collector itself."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_remotewrite import Receiver, decode, receiving, result

from courierwatch.collector.config import load_collector_config
from courierwatch.collector.exposition import PROBE, Exposition
from courierwatch.collector.remote.config import RemoteWriteConfig
from courierwatch.collector.remote.current import PROBE_FAMILIES, StateEncoder, StateWriter
from courierwatch.collector.state import State
from courierwatch.common.configfile import ConfigError
from courierwatch.v1 import courierwatch_pb2 as pb

NOW = 1_700_000_000.0


def live_and_gone() -> State:
    """Probe pi-live at ams streams (one good courier, one refused); pi-gone at ber had a
    stream and lost it."""
    state = State(clock=lambda: NOW)
    for site, probe_id in (("ams", "pi-live"), ("ber", "pi-gone")):
        hello = pb.Hello(site=site, probe_id=probe_id, software_version="1.2",
                         config_digest="abc")  # fmt: skip
        hello.groups.add(id="push", title="Push", critical=True)
        probe = state.connect(hello)
        state.apply(probe, [result(1, pop="eu-central"),
                            result(2, port=443, outcome=pb.OUTCOME_REFUSED)])  # fmt: skip
    state.disconnect(state.get(("ber", "pi-gone")))
    return state


def scraped(state: State) -> dict[tuple[str, frozenset], float]:
    """The probe-level samples of /metrics (a scrape's names: counters with _total)."""
    probe_names = {family.name for family in PROBE_FAMILIES}
    found = {}
    for family in text_string_to_metric_families(Exposition(state).render().decode()):
        for sample in family.samples:
            if sample.name in probe_names:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def test_a_live_probe_s_state_is_what_metrics_shows_at_the_collector_s_time():
    state = live_and_gone()
    data, count = StateEncoder().encode(state, 1_700_000_000_123)
    samples = decode(data)
    assert count == len(samples)
    assert {timestamp for _, _, timestamp in samples} == {1_700_000_000_123}
    written = {(labels["__name__"], frozenset((k, v) for k, v in labels.items()
                                              if k != "__name__")): value
               for labels, value, _ in samples}  # fmt: skip
    live = {key: value for key, value in scraped(state).items()
            if ("probe", "pi-live") in key[1]}  # fmt: skip
    assert written == live
    names = {name for name, _ in written}
    assert {"courierwatch_probe_up", "courierwatch_site_state", "courierwatch_site_cause",
            "courierwatch_courier_state", "courierwatch_group_info",
            "courierwatch_probe_last_seen_timestamp_seconds"} <= names  # fmt: skip
    assert written[("courierwatch_probe_up",
                    frozenset({("site", "ams"), ("probe", "pi-live")}))] == 1  # fmt: skip


def test_no_probe_without_a_stream_and_no_collector_label():
    samples = decode(StateEncoder().encode(live_and_gone(), 1)[0])
    assert {labels["probe"] for labels, _, _ in samples} == {"pi-live"}
    own = {label for family in PROBE_FAMILIES for label in family.labels}
    assert {name for labels, _, _ in samples for name in labels} <= {"__name__", *own}
    assert set(PROBE.labels) <= own
    assert not any(name.startswith("courierwatch_collector") or "reload" in name
                   for name in {labels["__name__"] for labels, _, _ in samples})  # fmt: skip
    assert StateEncoder().encode(State(clock=lambda: NOW), 1) == (b"", 0)


async def test_the_writer_writes_every_interval_and_skips_while_the_store_is_slow():
    state = live_and_gone()
    receiver = Receiver()
    async with receiving(receiver):
        config = RemoteWriteConfig(url=receiver.url, state_interval=1.0)
        clock = iter(range(10**6)).__next__
        writer = StateWriter(state, config, clock=lambda: 1000.0 + clock())
        receiver.release.clear()  # the store holds its answer
        async with writer:
            await asyncio.wait_for(receiver.arrived.wait(), 10)
            # While the first period is unanswered, the next is skipped, not queued.
            assert await writer.write_once() is None
            assert writer.skipped >= 1
            receiver.arrived.clear()
            receiver.release.set()
            await asyncio.wait_for(receiver.arrived.wait(), 10)  # the next period
        assert len(receiver.requests) >= 2
        first, second = receiver.requests[:2]
        assert {t for _, _, t in first} != {t for _, _, t in second}  # each at its own time
        assert {(labels["__name__"], labels.get("state")) for labels, _, _ in first} == {
            (labels["__name__"], labels.get("state")) for labels, _, _ in second
        }


def collector_config(tmp_path, section: str):
    (tmp_path / "collector.yaml").write_text("transport: {insecure: true}\n" + section)
    return load_collector_config(str(tmp_path / "collector.yaml"), insecure=True)


def test_state_interval_is_read_and_bounded(tmp_path):
    url = "remote_write:\n  url: http://vm:8428/api/v1/write\n"
    assert collector_config(tmp_path, url).remote_write.state_interval == 15.0
    config = collector_config(tmp_path, url + "  state_interval: 2s\n")
    assert config.remote_write.state_interval == 2.0
    # Past 30 s a live probe would read as down between two writes (the rules wait 1 minute).
    with pytest.raises(ConfigError) as error:
        collector_config(tmp_path, url + "  state_interval: 45s\n")
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'collector.yaml'}:4: remote_write.state_interval: ")
    assert "\n" not in message


async def test_a_probe_whose_stream_ended_is_written_once_more_saying_so_then_never():
    state = live_and_gone()  # pi-gone's stream ended before any write: never written
    receiver = Receiver()
    async with receiving(receiver):
        writer = StateWriter(state, RemoteWriteConfig(url=receiver.url, state_interval=30.0))
        async with writer:  # writes the first period at once
            await asyncio.wait_for(receiver.arrived.wait(), 10)
            await writer.flushed()
            state.disconnect(state.get(("ams", "pi-live")))
            for _ in range(2):
                deliveries = await writer.write_once()
                assert deliveries is not None
                assert [await delivery for delivery in deliveries] == [None]  # stored
    up = [{(labels["probe"], value) for labels, value, _ in request
           if labels["__name__"] == "courierwatch_probe_up"}
          for request in receiver.requests]  # fmt: skip
    # The third period had nothing to write: no request at all.
    assert up == [{("pi-live", 1.0)}, {("pi-live", 0.0)}]
