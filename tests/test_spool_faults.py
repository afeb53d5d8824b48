"""The spool against what an unattended Pi meets: clock steps, unreadable rows, a full disk,
a corrupt file at start. In-process with injected clocks, and as real probe processes (under
libfaketime, on a small tmpfs, against a real collector)."""

import asyncio
import contextlib
import errno
import logging
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from polling import until
from test_transport import (
    Collector,
    applied_at_least,
    drained,
    enroll,
    probe_config,
    totals,
)
from test_transport import fleet as fleet  # fixtures shared with the transport tests
from test_transport import listener as listener

from courierwatch.probe.spool import RESERVE_BYTES, Spool
from courierwatch.v1 import courierwatch_pb2 as pb
from processes import courierwatch

DAY = 86400.0


class Clocks:
    """A wall clock that NTP may step, and a monotonic clock that nothing steps."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 5_000.0

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def monotonic(self) -> float:
        return self.mono


@pytest.fixture
def clocks(monkeypatch) -> Clocks:
    clocks = Clocks()
    monkeypatch.setattr(time, "time", lambda: clocks.wall)
    return clocks


def results(n: int, target: str = "a.apple.com") -> list[pb.Result]:
    return [pb.Result(target=target, port=443, check="tls") for _ in range(n)]


async def put_and_flush(spool: Spool, n: int, **fields: object) -> None:
    for result in results(n):
        result.MergeFrom(pb.Result(**fields))
        spool.put(result)
    await spool.flush()


def facts(path: Path) -> tuple[dict[str, int], list[int]]:
    """A spool's meta counters and its row numbers, read from outside its process."""
    db = sqlite3.connect(path)
    try:
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        seqs = [seq for (seq,) in db.execute("SELECT seq FROM results ORDER BY seq")]
    finally:
        db.close()
    return meta, seqs


# --- clock steps ---------------------------------------------------------------------------


@pytest.mark.parametrize("step", [2 * DAY, -2 * DAY], ids=["ahead", "back"])
async def test_a_wall_clock_step_either_way_drops_nothing(tmp_path, clocks, step):
    spool = Spool(tmp_path / "s.sqlite", max_age=3600, clock=clocks.monotonic)
    await spool.open()
    await put_and_flush(spool, 3)
    clocks.advance(10)
    clocks.wall += step  # for a few seconds, then NTP steps it back
    await put_and_flush(spool, 3)
    clocks.advance(5)
    clocks.wall -= step
    await put_and_flush(spool, 3)
    assert [r.seq for r in await spool.after(0, 100)] == list(range(1, 10))
    assert spool.stats().dropped == 0
    assert spool.stats().oldest_age == 15
    await spool.close()


async def test_the_age_bound_holds_on_the_spool_clock_across_restarts(tmp_path):
    clocks = Clocks()
    path = tmp_path / "s.sqlite"
    first = Spool(path, max_age=100, clock=clocks.monotonic)
    await first.open()
    await put_and_flush(first, 3)
    clocks.mono += 60
    await put_and_flush(first, 1)  # stores where the spool clock got to
    await first.close()
    clocks.mono = 3.0  # a reboot: the monotonic clock starts again near zero
    again = Spool(path, max_age=100, clock=clocks.monotonic)
    await again.open()
    assert again.stats().oldest_age == 60  # carried on, neither reset nor negative
    clocks.mono += 30
    await put_and_flush(again, 1)
    assert again.stats().dropped == 0
    clocks.mono += 20  # the first three are 110 s old on the spool clock now
    await put_and_flush(again, 1)
    assert [r.seq for r in await again.after(0, 10)] == [4, 5, 6]
    assert again.stats().dropped == 3
    await again.close()


async def test_a_spool_from_before_the_spool_clock_keeps_its_ages(tmp_path):
    """Rows stamped with the wall clock by an older version keep their ages."""
    path = tmp_path / "s.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE results (seq INTEGER PRIMARY KEY, made REAL NOT NULL, "
                   "body BLOB NOT NULL)")
        db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        body = results(1)[0].SerializeToString()
        db.executemany("INSERT INTO results VALUES (?, ?, ?)",
                       [(1, 1_700_000_000.0, body), (2, 1_700_000_040.0, body)])
    spool = Spool(path, clock=Clocks().monotonic)
    await spool.open()
    assert spool.stats().oldest_age == 40
    assert [r.seq for r in await spool.after(0, 10)] == [1, 2]
    await spool.close()


def libfaketime() -> str:
    """The preload library of Debian's libfaketime (thread-safe variant): skipped where
    absent, but a failure in CI."""
    for where in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        library = Path(where) / "faketime" / "libfaketimeMT.so.1"
        if library.exists():
            return str(library)
    message = "libfaketime is not installed (Debian package libfaketime)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def stepped_clock(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A file holding the wall clock's offset ("+0", "+2d", "-2d"), and the environment in
    which a child process's wall clock follows it, re-read at every call, while its monotonic
    clock runs on (as after an NTP step)."""
    offset = tmp / "faketime"
    offset.write_text("+0\n")
    env = {**os.environ, "LD_PRELOAD": libfaketime(), "FAKETIME_TIMESTAMP_FILE": str(offset),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}  # fmt: skip
    return offset, env


async def made_at_least(path: Path, n: int, probe: asyncio.subprocess.Process) -> int:
    """Wait until the probe has flushed result #n; its highest number then."""

    async def made() -> int:
        assert probe.returncode is None, await probe.stderr.read()
        last = facts(path)[0].get("last_seq", 0)
        return last if last >= n else 0

    # sqlite3.Error: the spool not created yet.
    return await until(f"result #{n} flushed", 30, made, every=0.1, passing=(sqlite3.Error,))


@pytest.mark.integration
async def test_a_real_probe_whose_clock_steps_either_way_drops_nothing(tmp_path, fleet, listener):
    """The issue's case: an NTP step of two days on a Pi without an RTC, for a few seconds,
    and back; then the same behind. libfaketime steps the wall clock only (as NTP does: the
    monotonic clock runs on), re-reading its offset file at every call."""
    offset, env = stepped_clock(tmp_path)
    where = enroll(fleet, "pi-clock")
    spool = where / "spool.sqlite"
    # No collector: everything stays spooled, so any drop shows.
    config = probe_config(where, Collector(tmp_path, fleet), listener,
                          spool={"path": str(spool), "max_age": "1h"})
    async with courierwatch("probe", "--config", config, env=env) as probe:
        last = await made_at_least(spool, 10, probe)
        for step in ("+2d", "+0", "-2d", "+0"):
            offset.write_text(f"{step}\n")
            # 10 results a second, a flush every 2 s: results made under this clock have
            # been flushed, and the age bound applied, under it.
            last = await made_at_least(spool, last + 25, probe)
        meta, seqs = facts(spool)
        probe.send_signal(signal.SIGKILL)  # not about draining: there is nothing to drain to
    assert meta.get("dropped", 0) == 0
    assert seqs == list(range(1, meta["last_seq"] + 1))


# --- unreadable rows -----------------------------------------------------------------------


@pytest.mark.parametrize("poison", [b"\xff\xff\xff", "text, not bytes"], ids=["bytes", "text"])
async def test_an_unreadable_row_is_quarantined_and_the_rest_go_on(tmp_path, poison):
    path = tmp_path / "s.sqlite"
    spool = Spool(path)
    await spool.open()
    await put_and_flush(spool, 6)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE results SET body = ? WHERE seq IN (2, 3)", (poison,))
    assert [r.seq for r in await spool.after(0, 10)] == [1, 4, 5, 6]
    assert spool.stats().quarantined == 2
    assert spool.stats().depth == 4
    assert [r.seq for r in await spool.after(0, 10)] == [1, 4, 5, 6]  # once is enough
    await spool.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        kept = db.execute("SELECT seq, body, reason FROM quarantine ORDER BY seq").fetchall()
    assert [(seq, body) for seq, body, _ in kept] == [(2, poison), (3, poison)]
    assert all(reason.startswith("unreadable") for _, _, reason in kept)
    again = Spool(path)
    await again.open()
    assert again.stats().quarantined == 2  # counted for good, like the drops
    await again.close()


async def test_a_run_of_unreadable_rows_longer_than_a_batch_is_passed_over(tmp_path):
    path = tmp_path / "s.sqlite"
    spool = Spool(path)
    await spool.open()
    await put_and_flush(spool, 8)
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE results SET body = x'ff' WHERE seq <= 7")
    assert [r.seq for r in await spool.after(0, 2)] == [8]
    assert await spool.after(8, 2) == []
    assert spool.stats().quarantined == 7
    assert not spool.holds(7) and spool.holds(8)
    await spool.close()


@pytest.mark.integration
async def test_a_real_probe_sends_past_unreadable_and_oversized_rows(tmp_path, fleet, listener):
    """The issue's case: one row every stream failed on held back everything behind it. Here
    one is garbage and one is larger than the collector takes (64 KiB in Collector)."""
    collector = Collector(tmp_path, fleet)
    where = enroll(fleet, "pi-poison")
    spool = where / "spool.sqlite"
    config = probe_config(where, collector, listener)
    async with courierwatch("probe", "--config", config) as probe:
        await made_at_least(spool, 30, probe)
        probe.send_signal(signal.SIGKILL)
        await probe.wait()
    # Too large even after the probe cuts its free text to the Welcome's limit: an identity
    # field (never cut) of 70 KB.
    huge = pb.Result(target="x" * 70_000, port=listener, check="tcp")
    with contextlib.closing(sqlite3.connect(spool)) as db, db:
        db.execute("UPDATE results SET body = x'ffffff' WHERE seq = 5")
        db.execute("UPDATE results SET body = ? WHERE seq = 9", (huge.SerializeToString(),))
    await collector.start()
    async with courierwatch("probe", "--config", config) as probe:
        made = facts(spool)[0]["last_seq"]
        await applied_at_least(collector.url, "pi-poison", made + 10)
        await drained(probe)
        log = (await probe.stderr.read()).decode()
    meta, _ = facts(spool)
    applied, counted = await totals(collector.url, "pi-poison")
    assert applied == counted == meta["last_seq"] - 2, "all but the two, each once"
    assert meta["quarantined"] == 2
    with contextlib.closing(sqlite3.connect(spool)) as db:
        assert [s for (s,) in db.execute("SELECT seq FROM quarantine ORDER BY seq")] == [5, 9]
    assert log.count("streaming to collector") == 1, "no reconnecting over it: " + log
    await collector.stop()


# --- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """An 8 MiB tmpfs of the test's own, unmounted after it (mark its tests root)."""
    where = tmp_path / "disk"
    where.mkdir()
    # Root alone is not enough in a container without CAP_SYS_ADMIN: say so, fail under CI.
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        message = f"cannot mount a tmpfs: {done.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield where
    finally:
        subprocess.run(["umount", "--lazy", str(where)], check=True)  # even with files open


def fill(disk: Path) -> Path:
    """Take every free byte of `disk` with a file of its own."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (1 << 16, 1 << 12, 1 << 9):
            for _ in range(1 << 12):  # bounded: more than the disk holds in every block size
                try:
                    os.write(fd, b"\0" * block)
                except OSError as error:
                    assert error.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    assert os.statvfs(disk).f_bavail == 0
    return filler


@pytest.mark.root(reason="mounts a small tmpfs")
async def test_a_spool_that_fills_the_disk_drops_the_oldest_and_counts_them(small_disk, caplog):
    spool = Spool(small_disk / "s.sqlite", max_bytes=1 << 30)  # the disk is the bound
    await spool.open()
    assert (small_disk / "s.sqlite-reserve").stat().st_size == RESERVE_BYTES
    made = 0
    for _ in range(100):  # bounded: the disk is full after about 20
        await put_and_flush(spool, 500, detail="x" * 700)
        made += 500
        if spool.stats().dropped_disk_full:
            break
    for _ in range(5):  # and it stays usable while full
        await put_and_flush(spool, 500, detail="x" * 700)
        made += 500
    stats = spool.stats()
    assert stats.dropped_disk_full > 0
    assert stats.depth + stats.dropped_disk_full == made, "every result kept or counted"
    kept = [r.seq for r in await spool.after(0, 10**6)]
    assert kept == list(range(made - len(kept) + 1, made + 1)), "the newest are kept"
    assert "the disk is full" in caplog.text
    await spool.close()


@pytest.mark.root(reason="mounts a small tmpfs")
async def test_a_disk_filled_by_others_costs_the_oldest_until_there_is_room(small_disk, caplog):
    caplog.set_level(logging.INFO)
    path = small_disk / "s.sqlite"
    spool = Spool(path)
    await spool.open()
    await put_and_flush(spool, 200)
    filler = fill(small_disk)
    for _ in range(3):
        await put_and_flush(spool, 50)
    assert spool.stats().dropped_disk_full > 0
    assert spool.stats().depth + spool.stats().dropped_disk_full == 350
    assert not (small_disk / "s.sqlite-reserve").exists()  # given up to make room
    filler.unlink()
    await put_and_flush(spool, 50)
    assert (small_disk / "s.sqlite-reserve").exists()  # taken back
    assert "the disk has room again" in caplog.text
    dropped = spool.stats().dropped_disk_full
    await put_and_flush(spool, 50)
    assert spool.stats().dropped_disk_full == dropped
    await spool.close()
    assert facts(path)[0]["dropped_disk_full"] == dropped  # stored, for the probe's health


@pytest.mark.integration
@pytest.mark.root(reason="mounts a small tmpfs")
async def test_a_real_probe_on_a_full_disk_keeps_measuring(tmp_path, fleet, listener,
                                                           small_disk):
    """The issue's case: `database or disk is full`, a traceback, exit 1, a crash loop."""
    collector = Collector(tmp_path, fleet)  # started later: until then everything spools
    where = enroll(fleet, "pi-full")
    spool = small_disk / "spool.sqlite"
    config = probe_config(where, collector, listener, spool={"path": str(spool)})
    async with courierwatch("probe", "--config", config) as probe:
        filled_at = await made_at_least(spool, 20, probe)
        filler = fill(small_disk)
        # Still measuring, and flushing: room is made by dropping the oldest.
        await made_at_least(spool, filled_at + 30, probe)
        assert facts(spool)[0]["dropped_disk_full"] > 0
        filler.unlink()
        await collector.start()
        await applied_at_least(collector.url, "pi-full", facts(spool)[0]["last_seq"] + 10)
        await drained(probe)
        log = (await probe.stderr.read()).decode()
    meta, _ = facts(spool)
    applied, _ = await totals(collector.url, "pi-full")
    assert applied + meta["dropped_disk_full"] == meta["last_seq"], "delivered or counted"
    assert "Traceback" not in log
    assert log.count("the disk is full") == 1 and "room again" in log
    await collector.stop()


# --- a corrupt file at start ---------------------------------------------------------------


def garbage(path: Path) -> None:
    path.write_bytes(b"this is not an SQLite file\n" * 200)


def truncated(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE results (seq INTEGER PRIMARY KEY, made REAL NOT NULL, "
                   "body BLOB NOT NULL)")
        db.executemany("INSERT INTO results VALUES (?, 0, ?)",
                       [(n, b"\x01" * 300) for n in range(1, 2001)])
    os.truncate(path, path.stat().st_size // 2)


def wrong_schema(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE results (id INTEGER, text TEXT)")
        db.execute("INSERT INTO results VALUES (1, 'someone else''s')")


CORRUPTIONS = [garbage, truncated, wrong_schema]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
async def test_a_corrupt_spool_is_moved_aside_and_a_fresh_one_made(tmp_path, caplog, corrupt):
    path = tmp_path / "spool.sqlite"
    corrupt(path)
    before = path.read_bytes()
    spool = Spool(path)
    await spool.open()
    await put_and_flush(spool, 3)
    assert [r.seq for r in await spool.after(0, 10)] == [1, 2, 3]
    await spool.close()
    (aside,) = tmp_path.glob("spool.sqlite.corrupt-*")
    assert aside.read_bytes() == before, "kept as it was, for a look"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and aside.name in errors[0].getMessage()
    assert "\n" not in errors[0].getMessage()


async def test_a_spool_that_cannot_be_opened_is_not_moved_aside(tmp_path):
    """Only the file's own fault moves it aside: not a lock, a permission or a wrong path."""
    path = tmp_path / "spool.sqlite"
    path.mkdir()
    spool = Spool(path)
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        await spool.open()
    assert path.is_dir()
    assert list(tmp_path.glob("spool.sqlite.corrupt-*")) == []


@pytest.mark.integration
@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
async def test_a_real_probe_starts_on_a_corrupt_spool(tmp_path, fleet, listener, corrupt):
    """The issue's case: every start failed with a traceback."""
    collector = Collector(tmp_path, fleet)
    await collector.start()
    where = enroll(fleet, "pi-corrupt")
    corrupt(where / "spool.sqlite")
    async with courierwatch("probe", "--config",
                            probe_config(where, collector, listener)) as probe:
        await applied_at_least(collector.url, "pi-corrupt", 10)
        await drained(probe)
        log = (await probe.stderr.read()).decode()
    assert len(list(where.glob("spool.sqlite.corrupt-*"))) == 1
    said = [line for line in log.splitlines() if "moved it aside" in line]
    assert len(said) == 1 and " ERROR " in said[0], log
    assert "Traceback" not in log
    await collector.stop()
