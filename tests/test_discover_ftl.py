"""Pi-hole FTL databases of both shapes, built with Pi-hole's own CREATE statements, read by
courierwatch.discover.ftl: counts, blocked statuses, the time window, read-only, bounded
reads from a watermark and the per-group summary a probe would stream."""

import sqlite3
from pathlib import Path

import pytest
from data.make_sample import FTL_V5_SCHEMA as V5_SCHEMA
from data.make_sample import FTL_V6_SCHEMA as V6_SCHEMA

from courierwatch.discover import ftl, groups
from courierwatch.discover.tally import Tally

T0 = 1_764_576_000
# (timestamp, type, status, domain, client, additional_info): status 2 forwarded, 3 cached,
# 1 gravity, 9 gravity at a CNAME, 16 special domain, 7 upstream 0.0.0.0
ROWS = [
    (T0 + 0, 1, 2, "gs.apple.com", "192.168.1.20", None),
    (T0 + 5, 28, 3, "gs.apple.com", "192.168.1.21", None),
    (T0 + 9, 1, 3, "gs.apple.com", "192.168.1.20", None),
    (T0 + 10, 1, 1, "init-p01st.push.apple.com", "192.168.1.20", None),
    (T0 + 11, 1, 1, "init-p01st.push.apple.com", "192.168.1.22", None),
    (T0 + 12, 2, 9, "weather-data.apple.com", "192.168.1.22", "weather-data.apple.com.akadns.net"),
    (T0 + 13, 1, 16, "mask.icloud.com", "192.168.1.23", None),
    (T0 + 14, 16, 2, "gspe19-ssl.ls.apple.com", "192.168.1.23", None),
    (T0 + 15, 1, 2, "www.example.com", "192.168.1.24", None),
    (T0 + 3600, 1, 7, "metrics.icloud.com", "192.168.1.24", None),
]


def build_v5(path: Path, rows=ROWS) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(V5_SCHEMA)
        db.executemany(
            "INSERT INTO queries (timestamp, type, status, domain, client, additional_info)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


def build_v6(path: Path, rows=ROWS) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(V6_SCHEMA)
        for ts, qtype, status, domain, client, info in rows:
            db.execute("INSERT OR IGNORE INTO domain_by_id (domain) VALUES (?)", (domain,))
            db.execute("INSERT OR IGNORE INTO client_by_id (ip) VALUES (?)", (client,))
            info_id = None
            if info is not None:
                db.execute(
                    "INSERT OR IGNORE INTO addinfo_by_id (type, content) VALUES (1, ?)", (info,)
                )
                (info_id,) = db.execute(
                    "SELECT id FROM addinfo_by_id WHERE content = ?", (info,)
                ).fetchone()
            db.execute(
                "INSERT INTO query_storage (timestamp, type, status, domain, client,"
                " additional_info) VALUES (?, ?, ?, (SELECT id FROM domain_by_id WHERE domain"
                " = ?), (SELECT id FROM client_by_id WHERE ip = ?), ?)",
                (ts, qtype, status, domain, client, info_id),
            )
    db.close()


@pytest.fixture(params=["v5", "v6"])
def database(request, tmp_path) -> Path:
    path = tmp_path / "pihole-FTL.db"
    (build_v5 if request.param == "v5" else build_v6)(path)
    return path


def read(path: Path, **window) -> Tally:
    tally = Tally(**window)
    stats = ftl.read(str(path), tally, "pihole")
    assert stats.error == ""
    return tally


def test_counts_types_clients_and_times(database):
    tally = read(database)
    gs = tally.names["gs.apple.com"]
    assert (gs.queries, len(gs.clients), gs.first, gs.last) == (3, 2, T0, T0 + 9)
    assert gs.types == {"A": 2, "TYPE28": 1}  # 28 is no FTL type code: stored as is
    assert gs.blocked == {}
    assert tally.names["gspe19-ssl.ls.apple.com"].types == {"HTTPS": 1}
    assert tally.sources[0].used == len(ROWS)
    assert tally.sources[0].kind == "pihole-ftl"


def test_blocked_statuses_with_their_reasons(database):
    names = read(database).names
    assert names["init-p01st.push.apple.com"].blocked == {"gravity": 2}
    assert names["mask.icloud.com"].blocked == {"special domain": 1}
    assert names["metrics.icloud.com"].blocked == {"upstream 0.0.0.0": 1}
    weather = names["weather-data.apple.com"]
    assert weather.blocked == {"gravity, at a CNAME": 1}
    assert weather.blocked_at == "weather-data.apple.com.akadns.net"  # from additional_info


def test_v6_linking_tables_read_as_the_view_reads(tmp_path):
    path = tmp_path / "pihole-FTL.db"
    build_v6(path)
    fast = ftl.Reader(str(path))
    view = ftl.Reader(str(path))
    view.linked, view.table = False, "queries"  # what Pi-hole's own view gives
    assert fast.linked
    whole = (0, 100, (0, 1e18))
    results = [sorted(row._replace(clients=tuple(sorted(row.clients))) for row in r.groups(*whole))
               for r in (fast, view)]  # fmt: skip
    assert results[0] == results[1]
    assert ("weather-data.apple.com", 2, 9, 1, T0 + 12, T0 + 12,
            "weather-data.apple.com.akadns.net", ("192.168.1.22",)) in results[0]  # fmt: skip
    assert len(results[0]) == 9
    fast.close()
    view.close()


def test_the_window_is_applied_in_the_query(database):
    tally = read(database, since=T0 + 10, until=T0 + 3600)
    assert "gs.apple.com" not in tally.names
    assert "metrics.icloud.com" not in tally.names  # at until: excluded
    assert tally.names["init-p01st.push.apple.com"].queries == 2


def test_opened_read_only(database):
    before = database.read_bytes()
    reader = ftl.Reader(str(database))
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.conn.execute("CREATE TABLE mine (x)")
    reader.close()
    assert database.read_bytes() == before


def test_a_writer_is_not_held_off_between_ranges(database):
    # FTL writes while discover reads: each range is one short statement, not one transaction.
    reader = ftl.Reader(str(database))
    rows, upto = ftl.read_range(reader, 0, limit=3)
    writer = sqlite3.connect(database, timeout=0)
    table = "queries" if "query_storage" not in _tables(writer) else "query_storage"
    writer.execute(f"UPDATE {table} SET timestamp = timestamp WHERE id = 1")
    writer.commit()
    writer.close()
    assert upto == 3 and sum(r.count for r in rows) == 3
    reader.close()


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def test_watermark_reads_are_bounded_and_cover_every_row(database):
    reader = ftl.Reader(str(database))
    after, seen, passes = 0, 0, 0
    while passes < 20:
        rows, after = ftl.read_range(reader, after, limit=4)
        if not rows:
            break
        assert sum(r.count for r in rows) <= 4
        seen += sum(r.count for r in rows)
        passes += 1
    reader.close()
    assert (seen, passes, after) == (len(ROWS), 3, len(ROWS))


def test_group_summary_for_the_probe(database):
    reader = ftl.Reader(str(database))
    rows, _ = ftl.read_range(reader, 0)
    reader.close()
    summary = groups.summarize(rows, top=2)
    by_group = {g.group: (g.queries, g.blocked) for g in summary.groups}
    assert by_group["push"] == (2, 2)
    assert by_group["device_setup"] == (3, 0)  # gs.apple.com's first group in the catalog
    assert by_group["icloud"] == (1, 1)  # mask.icloud.com, Pi-hole's special domain
    assert by_group[groups.OUTSIDE] == (3, 2)  # weather-data, metrics, gspe19
    assert "" not in by_group and len(summary.groups) == 4  # www.example.com is not Apple's
    assert summary.top_blocked == (("init-p01st.push.apple.com", "push", 2),
                                   ("mask.icloud.com", "icloud", 1))  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("CREATE TABLE other (x);", "no queries table or view"),
        (None, "not a readable SQLite database"),
    ],
)
def test_not_an_ftl_database(tmp_path, content, message):
    path = tmp_path / "pihole-FTL.db"
    if content is None:
        path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    else:
        with sqlite3.connect(path) as db:
            db.executescript(content)
        db.close()
    tally = Tally()
    stats = ftl.read(str(path), tally, "x")
    assert stats.error.startswith(f"{path}: {message}")
    assert tally.names == {}


def test_v6_rows_whose_ids_have_no_name_are_skipped_and_counted(tmp_path):
    path = tmp_path / "pihole-FTL.db"
    build_v6(path, ROWS[:2])
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO query_storage (timestamp, type, status, domain, client)"
                   " VALUES (?, 1, 2, 999, 1)", (T0,))  # fmt: skip
    db.close()
    tally = Tally()
    stats = ftl.read(str(path), tally, "x")
    assert (stats.used, stats.skipped) == (2, 1)
    assert "without a domain" in stats.first_skipped
