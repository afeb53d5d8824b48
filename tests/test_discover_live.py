"""Live on the probe: the dns_clients check reads the rows a Pi-hole adds to pihole-FTL.db
(v5 and v6 schemas, built with Pi-hole's own CREATE statements) by id watermark, bounded per
pass; the collector counts its per-group aggregates; a real probe process streams them to a
real collector, whose /metrics shows the counts and the site's client_dns_filter cause."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
import yaml
from data.make_sample import FTL_V5_SCHEMA, FTL_V6_SCHEMA

from courierwatch.collector.exposition import Exposition
from courierwatch.collector.state import DNS_CLIENT_GROUPS, State
from courierwatch.common.sitestate import CLIENT_DNS_FILTER
from courierwatch.probe.checks import dns_clients
from courierwatch.probe.config import load_probe_config
from courierwatch.probe.context import build_context
from courierwatch.probe.runner import run_check
from courierwatch.v1 import courierwatch_pb2 as pb
from processes import courierwatch, key, line_starting, scrape, wait_for_metrics

T0 = 1_764_576_000
ALLOWED, GRAVITY, REGEX_AT_CNAME = 2, 1, 10  # FTL status codes: forwarded, blocked (two ways)
HISTORY = [("1-courier.push.apple.com", GRAVITY)] * 50 + [("gs.apple.com", ALLOWED)] * 20
# One minute at the site: blocked couriers and a blocked name outside the catalog, allowed
# Apple names, and a name that is not Apple's (not counted at all).
MINUTE = [
    *[("1-courier.push.apple.com", GRAVITY)] * 3,
    *[("2-courier.push.apple.com", REGEX_AT_CNAME)] * 2,
    ("3-courier.push.apple.com", GRAVITY),
    *[("gs.apple.com", ALLOWED)] * 4,
    ("metrics.icloud.com", GRAVITY),
    ("www.example.com", GRAVITY),
]
GROUPS = {"device_setup": (4, 0), "not_in_catalog": (1, 1), "push": (6, 6)}
DETAIL = (
    "the site's DNS filter blocked Apple names its devices asked for: push 6 "
    "(1-courier.push.apple.com, 2-courier.push.apple.com, ...), not_in_catalog 1 (...)"
)


class Ftl:
    """A pihole-FTL.db of one schema version that rows are appended to, as FTL does."""

    def __init__(self, path: Path, version: str) -> None:
        self.path, self.version = path, version
        with sqlite3.connect(path) as db:
            db.executescript(FTL_V5_SCHEMA if version == "v5" else FTL_V6_SCHEMA)
        db.close()

    def append(self, rows: list[tuple[str, int]], client: str = "192.168.1.20") -> None:
        db = sqlite3.connect(self.path, timeout=0)  # a reader must never hold FTL off
        with db:
            for n, (domain, status) in enumerate(rows):
                self._insert(db, T0 + n, domain, status, client)
        db.close()

    def _insert(self, db: sqlite3.Connection, ts: int, domain: str, status: int,
                client: str) -> None:  # fmt: skip
        if self.version == "v5":
            db.execute("INSERT INTO queries (timestamp, type, status, domain, client)"
                       " VALUES (?, 1, ?, ?, ?)", (ts, status, domain, client))  # fmt: skip
            return
        db.execute("INSERT OR IGNORE INTO domain_by_id (domain) VALUES (?)", (domain,))
        db.execute("INSERT OR IGNORE INTO client_by_id (ip) VALUES (?)", (client,))
        db.execute(
            "INSERT INTO query_storage (timestamp, type, status, domain, client) VALUES"
            " (?, 1, ?, (SELECT id FROM domain_by_id WHERE domain = ?),"
            " (SELECT id FROM client_by_id WHERE ip = ?))",
            (ts, status, domain, client),
        )


@pytest.fixture(params=["v5", "v6"])
def ftl(request, tmp_path) -> Ftl:
    database = Ftl(tmp_path / "pihole-FTL.db", request.param)
    database.append(HISTORY)
    return database


def live_target(tmp_path: Path, database: Path, **discover):
    path = tmp_path / "probe.yaml"
    settings = {"pihole_db": str(database), **discover}
    path.write_text(yaml.safe_dump({"catalog": {"groups": []}, "discover": settings}))
    config = load_probe_config(str(path), require_identity=False, host_has_ipv6=lambda: False)
    (target,) = config.targets
    return target, build_context(config)


def groups(result: pb.Result) -> dict[str, tuple[int, int]]:
    return {g.group: (g.queries, g.blocked) for g in result.dns_clients.groups}


async def test_a_pass_counts_the_rows_added_since_the_last(tmp_path, ftl):
    target, ctx = live_target(tmp_path, ftl.path, top=2)
    first = await run_check(target, ctx)
    # From the newest row at the first pass: the database's history is not counted.
    assert (first.outcome, first.HasField("dns_clients"), groups(first)) == (pb.OUTCOME_OK, True,
                                                                             {})  # fmt: skip
    ftl.append(MINUTE)
    second = await run_check(target, ctx)
    assert second.outcome == pb.OUTCOME_DNS_SINKHOLE
    assert groups(second) == GROUPS
    assert second.detail == DETAIL
    third = await run_check(target, ctx)
    assert (third.outcome, groups(third), third.detail) == (pb.OUTCOME_OK, {}, "")
    ftl.append([("gs.apple.com", ALLOWED)] * 2)
    fourth = await run_check(target, ctx)
    assert (fourth.outcome, groups(fourth)) == (pb.OUTCOME_OK, {"device_setup": (2, 0)})


async def test_a_reload_that_changes_other_options_keeps_the_watermark(tmp_path, ftl):
    """SIGHUP with, say, another `top`: the same watch carries on (no second worker thread
    and open database per reload, and the rows since the last pass are counted once)."""
    target, ctx = live_target(tmp_path, ftl.path, top=2)
    await run_check(target, ctx)
    ftl.append(MINUTE)
    reloaded, ctx = live_target(tmp_path, ftl.path, top=3)
    assert reloaded != target and reloaded.series == target.series
    assert groups(await run_check(reloaded, ctx)) == GROUPS  # not "from now on" again
    assert groups(await run_check(target, ctx)) == {}


async def test_work_per_pass_is_bounded_and_the_rest_waits(tmp_path, ftl):
    target, ctx = live_target(tmp_path, ftl.path, rows=5)
    await run_check(target, ctx)
    ftl.append([("gs.apple.com", ALLOWED)] * 12)
    counts = [groups(await run_check(target, ctx)).get("device_setup") for _ in range(4)]
    assert counts == [(5, 0), (5, 0), (2, 0), None]


async def test_a_new_database_is_read_from_its_start(tmp_path, ftl):
    target, ctx = live_target(tmp_path, ftl.path)
    await run_check(target, ctx)
    fresh = Ftl(tmp_path / "new.db", ftl.version)  # Pi-hole made a new file: ids from 1 again
    fresh.append([("mesu.apple.com", ALLOWED)] * 3)
    fresh.path.replace(ftl.path)
    result = await run_check(target, ctx)
    assert (result.outcome, groups(result)) == (pb.OUTCOME_OK, {"software_updates": (3, 0)})


async def test_read_only_and_a_writer_is_never_held_off(tmp_path, ftl):
    target, ctx = live_target(tmp_path, ftl.path)
    await run_check(target, ctx)
    before = ftl.path.read_bytes()
    await run_check(target, ctx)
    assert ftl.path.read_bytes() == before
    ftl.append(MINUTE)  # with timeout=0: fails if the probe's connection held a lock
    assert groups(await run_check(target, ctx)) == GROUPS


async def test_a_missing_or_foreign_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "pihole-FTL.db"
    target, ctx = live_target(tmp_path, path)
    missing = await run_check(target, ctx)
    assert (missing.outcome, missing.detail) == (
        pb.OUTCOME_ERROR, f"{path}: No such file or directory",
    )  # fmt: skip
    path.write_text("not a database\n" * 100)
    foreign = await run_check(target, ctx)
    assert foreign.outcome == pb.OUTCOME_ERROR
    assert foreign.detail.startswith(f"{path}: not a readable SQLite database")
    path.unlink()
    Ftl(path, "v6").append(HISTORY)
    assert (await run_check(target, ctx)).outcome == pb.OUTCOME_OK  # there now: read it


def test_the_kind_is_registered_with_its_facts():
    spec = dns_clients.SPEC
    assert (spec.default_port, spec.per_family, spec.via_proxy) == (53, False, False)
    assert spec.facts == ("dns_clients",)


# --- the collector ----------------------------------------------------------------------------


def passes(*groups_per_pass: dict[str, tuple[int, int]], first_seq: int = 1) -> list[pb.Result]:
    results = []
    for n, per_group in enumerate(groups_per_pass):
        result = pb.Result(seq=first_seq + n, target="127.0.0.1", port=53, check="dns_clients",
                           group="dns_clients", interval_seconds=60)  # fmt: skip
        result.started_at.GetCurrentTime()
        result.dns_clients.SetInParent()
        for group, (queries, blocked) in per_group.items():
            result.dns_clients.groups.add(group=group, queries=queries, blocked=blocked)
        results.append(result)
    return results


def test_the_collector_counts_each_pass_once_per_group_and_status():
    state = State()
    probe = state.connect(pb.Hello(site="ams", probe_id="pi"))
    state.apply(probe, passes(GROUPS, {"push": (2, 1)}))
    state.apply(probe, passes(GROUPS))  # a replay of seq 1: a duplicate, not counted again
    assert probe.dns_clients == {
        ("device_setup", "allowed"): 4, ("device_setup", "blocked"): 0,
        ("not_in_catalog", "allowed"): 0, ("not_in_catalog", "blocked"): 1,
        ("push", "allowed"): 1, ("push", "blocked"): 7,
    }  # fmt: skip
    text = Exposition(state).render().decode()
    assert ('courierwatch_dns_client_queries_total{group="push",probe="pi",site="ams",'
            'status="blocked"} 7.0\n') in text  # fmt: skip
    assert "# TYPE courierwatch_dns_client_queries_total counter\n" in text


def test_what_a_probe_sends_cannot_make_a_series_per_name():
    state = State()
    probe = state.connect(pb.Hello(site="ams", probe_id="pi"))
    odd = {"": (5, 5), "x" * 65: (5, 5), "push": (1, 9), "icloud": (3, 1)}  # no group, too
    state.apply(probe, passes(odd))  # long, more blocked than asked: only icloud is counted
    assert probe.dns_clients == {("icloud", "allowed"): 2, ("icloud", "blocked"): 1}
    hostile = {f"name-{n}.apple.com": (1, 1) for n in range(3 * DNS_CLIENT_GROUPS)}
    state.apply(probe, passes(hostile, {"icloud": (1, 0)}, first_seq=2))
    assert len(probe.dns_clients) == 2 * DNS_CLIENT_GROUPS  # capped ...
    assert probe.dns_clients["icloud", "allowed"] == 3  # ... and a group it has still counts


# --- real processes -------------------------------------------------------------------------


def write(path: Path, document: dict) -> str:
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.mark.integration
async def test_a_probe_streams_its_site_s_blocked_apple_names_to_the_collector(tmp_path):
    """Two probe processes, one per schema, on their sites' Pi-holes, one collector."""
    collector_yaml = write(tmp_path / "collector.yaml", {
        "listen": {"grpc": "127.0.0.1:0", "http": "127.0.0.1:0"},
        "state_dir": str(tmp_path / "collector-state"),
        "transport": {"insecure": True},
    })  # fmt: skip
    databases = {version: Ftl(tmp_path / f"{version}.db", version) for version in ("v5", "v6")}
    for database in databases.values():
        database.append(HISTORY)

    # Passes 4 s apart: the probe's spool sends every 2 s, so a blocking pass stays the latest
    # result (and its cause on /metrics) for a while before the next pass replaces it.
    def probe_yaml(version: str, grpc: str) -> str:
        return write(tmp_path / f"probe-{version}.yaml", {
            "site": f"site-{version}", "probe_id": f"pi-{version}", "collectors": [grpc],
            "transport": {"insecure": True}, "catalog": {"groups": []}, "families": ["ipv4"],
            "spool": {"path": str(tmp_path / f"spool-{version}.sqlite")},
            "discover": {"pihole_db": str(databases[version].path), "interval": "4s", "top": 2},
        })  # fmt: skip

    def series(version: str, name: str, **labels: str):
        return key(name, site=f"site-{version}", probe=f"pi-{version}", **labels)

    def passed(version: str, outcome: str):
        return series(
            version,
            "courierwatch_check_outcome",
            target="127.0.0.1",
            port="53",
            check="dns_clients",
            group="dns_clients",
            via="direct",
            outcome=outcome,
        )

    async with courierwatch("collector", "--config", collector_yaml) as collector:
        ready = await line_starting(collector, "collector ready:", 15)
        grpc, url = ready.split("grpc=")[1].split()[0], ready.split("metrics=")[1]
        async with (
            courierwatch("probe", "--config", probe_yaml("v5", grpc)),
            courierwatch("probe", "--config", probe_yaml("v6", grpc)),
        ):
            # A first pass of each (from the newest row: the history is not counted) ...
            await wait_for_metrics(url, [passed(v, "ok") for v in databases], 30)
            samples = await scrape(url)
            assert not [s for s in samples if s[0] == "courierwatch_dns_client_queries_total"]
            # ... then a minute of the site's queries, blocked and allowed, lands in FTL.
            for database in databases.values():
                database.append(MINUTE)
            cause = {"state": "filtered", "cause": CLIENT_DNS_FILTER, "group": "dns_clients"}
            wanted = [
                *(series(v, "courierwatch_site_cause", **cause) for v in databases),
                *(series(v, "courierwatch_dns_client_queries_total", group=g, status=s)
                  for v in databases for g in GROUPS for s in ("allowed", "blocked")),
            ]  # fmt: skip
            samples = await wait_for_metrics(url, wanted, 30)
            for version in databases:
                counted = {
                    group: tuple(samples[series(version, "courierwatch_dns_client_queries_total",
                                                group=group, status=status)]
                                 for status in ("allowed", "blocked"))
                    for group in GROUPS
                }  # fmt: skip
                assert counted == {g: (q - b, b) for g, (q, b) in GROUPS.items()}, version
                assert samples[series(version, "courierwatch_site_cause", **cause)] == 1
            # One series per group and status: never one per name.
            names = {dict(labels).get("group") for name, labels in samples
                     if name == "courierwatch_dns_client_queries_total"}  # fmt: skip
            assert names == set(GROUPS)
            # Later passes see nothing new: the counts stay, the cause goes.
            await wait_for_metrics(url, [passed(v, "ok") for v in databases], 30)
            later = await scrape(url)
            for version in databases:
                assert later[series(version, "courierwatch_dns_client_queries_total",
                                    group="push", status="blocked")] == 6  # fmt: skip
                assert series(version, "courierwatch_site_cause", **cause) not in later


@pytest.mark.integration
async def test_the_include_key_loads_what_discover_write_targets_wrote(tmp_path):
    from data import make_sample

    written = tmp_path / "discovered.yaml"
    async with courierwatch("discover", str(make_sample.SAMPLE), "--write-targets",
                            str(written)) as process:  # fmt: skip
        await asyncio.wait_for(process.wait(), 60)
    assert written.is_file()
    path = tmp_path / "probe.yaml"
    path.write_text(f"catalog: {{groups: []}}\ninclude: {written.name}\n")
    config = load_probe_config(str(path), require_identity=False, host_has_ipv6=lambda: False)
    assert {t.host for t in config.targets} >= {"metrics.icloud.com", "gspe19-ssl.ls.apple.com"}
    assert [(g.id, g.critical) for g in config.groups] == [("discovered", False)]
