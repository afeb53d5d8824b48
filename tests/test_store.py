"""Exactly once across a collector restart, made to happen rather than hoped for: a batch
committed whose acknowledgement never reached the probe is replayed to a restarted
collector, which must ignore all of it and still hold the counters it committed."""

import asyncio
import contextlib
import logging
import os
import sqlite3

import pytest
from test_spool_faults import fill
from test_spool_faults import small_disk as small_disk  # a fixture

from courierwatch.collector.state import State
from courierwatch.collector.store import _SCHEMA, Store
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


# --- a corrupt store at start, a full disk -------------------------------------------------


def garbage(path):
    path.write_bytes(b"this is not an SQLite file\n" * 200)


def damaged(path):
    """A store of many probes, cut in half (a crash of the disk, not of SQLite)."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(_SCHEMA)
        db.executemany("INSERT INTO probes VALUES (?, 'pi', 1, 1, 0, 0)",
                       [(f"site-{n:05}",) for n in range(5000)])  # fmt: skip
    os.truncate(path, path.stat().st_size // 2)


def wrong_schema(path):
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE probes (id INTEGER, text TEXT)")


@pytest.mark.parametrize("corrupt", [garbage, damaged, wrong_schema], ids=lambda f: f.__name__)
async def test_a_corrupt_store_is_moved_aside_said_once_and_a_fresh_one_made(tmp_path, caplog,
                                                                             corrupt):
    path = tmp_path / "collector.sqlite"
    corrupt(path)
    before = path.read_bytes()
    store, state = await restarted(path)
    assert store.started_fresh and state.probes() == []
    probe = state.connect(HELLO)
    await store.save(probe, state.apply(probe, batch(1, 3)))
    await store.close()
    (aside,) = tmp_path.glob("collector.sqlite.corrupt-*")
    assert aside.read_bytes() == before, "kept as it was, for a look"
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and aside.name in errors[0] and "\n" not in errors[0]
    assert "sequence numbers" in errors[0], "says what is lost"
    store, state = await restarted(path)
    assert not store.started_fresh and state.probes()[0].applied_through == 3
    await store.close()


async def test_a_store_that_cannot_be_opened_is_not_moved_aside(tmp_path):
    path = tmp_path / "collector.sqlite"
    path.mkdir()
    with pytest.raises(sqlite3.OperationalError):
        await Store(path).open()
    assert path.is_dir() and list(tmp_path.glob("collector.sqlite.corrupt-*")) == []


@pytest.mark.root(reason="mounts a small tmpfs")
async def test_a_full_disk_holds_commits_back_until_there_is_room(small_disk, caplog):
    path = small_disk / "collector.sqlite"
    store, state = await restarted(path)
    probe = state.connect(HELLO)
    await store.save(probe, state.apply(probe, batch(1, 3)))
    filler = fill(small_disk)
    # Many new checks: pages the full disk has no room for.
    wide = [pb.Result(seq=3 + n, target=f"t{n}.example", port=443, check="tls", group="g")
            for n in range(1, 3001)]  # fmt: skip
    saving = asyncio.create_task(store.save(probe, state.apply(probe, wide)))
    async with asyncio.timeout(10):
        while store.problem is None:  # noqa: ASYNC110 - the store's own retry loop
            await asyncio.sleep(0.05)
    assert "full" in store.problem and not saving.done() and store.pending(probe.key)
    filler.unlink()
    async with asyncio.timeout(20):  # its retries are at most 5 s apart
        await saving
    assert store.problem is None
    await store.close()
    store, state = await restarted(path)
    (again,) = state.probes()
    assert again.applied_through == 3003 and sum(again.counts.values()) == 3003
    await store.close()
    said = [r.getMessage() for r in caplog.records if "cannot commit" in r.getMessage()]
    assert len(said) == 1, "said once, not at every attempt"
    assert "takes commits again" in caplog.text
