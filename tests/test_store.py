"""Exactly once across a collector restart, made to happen rather than hoped for: a batch
committed whose acknowledgement never reached the probe is replayed to a restarted
collector, which must ignore all of it and still hold the counters it committed."""

from courierwatch.collector.state import State
from courierwatch.collector.store import Store
from courierwatch.v1 import courierwatch_pb2 as pb

HELLO = pb.Hello(site="ams", probe_id="pi-1")


def batch(first: int, n: int, outcome=pb.OUTCOME_OK):
    results = []
    for seq in range(first, first + n):
        r = pb.Result(seq=seq, target="courier.push.apple.com", port=5223, check="courier",
                      group="push", outcome=outcome, interval_seconds=30)
        r.started_at.FromSeconds(1_700_000_000 + seq)
        results.append(r)
    return results


async def restarted(path) -> tuple[Store, State]:
    store, state = Store(path), State()
    for probe in await store.open():
        state.restore(probe)
    return store, state


async def test_a_replayed_batch_after_a_restart_is_ignored_and_counters_carry_on(tmp_path):
    path = tmp_path / "collector.sqlite"
    store, state = await restarted(path)
    probe = state.connect(HELLO)
    await store.save(probe, state.apply(probe, batch(1, 10)))
    await store.save(probe, state.apply(probe, batch(11, 5, pb.OUTCOME_REFUSED)))
    await store.close()  # ... and the acknowledgement of the second batch is lost

    store, state = await restarted(path)
    probe = state.connect(HELLO)
    assert probe.applied_through == 15  # what the Welcome tells the probe
    replay = state.apply(probe, batch(11, 5, pb.OUTCOME_REFUSED))
    assert (replay.applied, replay.duplicates) == (0, 5)
    await store.save(probe, replay)
    fresh = state.apply(probe, batch(16, 3))
    await store.save(probe, fresh)
    assert fresh.applied == 3
    counts = {outcome: n for (_, outcome), n in probe.counts.items()}
    assert counts == {pb.OUTCOME_OK: 13, pb.OUTCOME_REFUSED: 5}
    await store.close()

    store, state = await restarted(path)
    (probe,) = state.probes()
    assert (probe.applied_through, probe.applied, probe.duplicates) == (18, 18, 5)
    assert sum(probe.counts.values()) == 18
    await store.close()


async def test_forgotten_probes_are_gone_from_disk_too(tmp_path):
    path = tmp_path / "collector.sqlite"
    store, state = await restarted(path)
    probe = state.connect(HELLO)
    await store.save(probe, state.apply(probe, batch(1, 3)))
    await store.forget([probe.key])
    await store.close()
    store, state = await restarted(path)
    assert state.probes() == []
    await store.close()
