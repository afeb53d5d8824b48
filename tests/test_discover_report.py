"""`courierwatch discover` on the committed sample capture: the report's sections and fixes
(worded as the readiness report words them), 80 columns, the JSON schema, privacy, the command
line's exit statuses and errors, and the sample's reproducibility."""

import io
import json
import re
import subprocess
import sys

import pytest
from data import make_sample

from courierwatch import cli
from courierwatch.discover import report
from courierwatch.discover.run import discover
from courierwatch.probe.oneshot import readiness
from courierwatch.v1 import courierwatch_pb2 as pb

SAMPLE = str(make_sample.SAMPLE)
CLIENT_ADDRESS = re.compile(r"192\.168\.10\.\d+")
ENTRY_KEYS = {
    "name", "section", "apple", "group", "via", "queries", "clients", "client_ids",
    "first_seen", "last_seen", "types", "blocked", "blocked_at", "rcodes", "answers", "cnames",
    "ports", "sources", "action",
}  # fmt: skip


@pytest.fixture(scope="module")
def found():
    return discover([SAMPLE])


def sinkhole_fix(name: str, group: str) -> str:
    result = pb.Result(target=name, group=group, outcome=pb.OUTCOME_DNS_SINKHOLE)
    return readiness.action(result).text


def test_the_sample_is_what_its_script_writes():
    buffer = io.BytesIO()
    make_sample.build(buffer)
    assert buffer.getvalue() == make_sample.SAMPLE.read_bytes()


def test_sections_in_order_each_finding_with_the_readiness_fix(found):
    text = report.discovery_text(found, cli.dns_filter_advice())
    headings = [
        "Blocked Apple names: 2",
        "Apple names outside the catalog: 8",
        "Apple names in the catalog:",
        "Reached through CNAME chains:",
        "Courier POPs",
        "To do:",
    ]
    positions = [text.index(heading) for heading in headings]
    assert positions == sorted(positions)
    assert "BLOCKED init-p01st.push.apple.com" in text
    assert f"-> {sinkhole_fix('init-p01st.push.apple.com', 'push')}" in text
    assert "-> allow *.push.apple.com in the DNS filter" in text  # the readiness wording
    assert f"-> {sinkhole_fix('metrics.icloud.com', '')}" in text
    assert "1. allow *.push.apple.com, metrics.icloud.com in the DNS filter" in text
    # The CDN name outside the catalog, reached through an Apple chain, with its answer.
    assert re.search(r"e6858\.dsce9\.akamaiedge\.net\n +via gspe19-ssl\.ls\.apple\.com; "
                     r"23\.40\.61\.12 \(not Apple\); TCP 443", text)  # fmt: skip
    assert "N-courier.push.apple.com (46 names)" in text
    assert re.search(r"eur-benelux +180 +5\n +from pop-eur-benelux-courier", text)
    words = " ".join(text.split())
    assert "1,491 packets, 1,084 DNS, 3 skipped (first: packet 280: truncated DNS header)" in words


def test_every_line_fits_80_columns(found):
    for hashed in (False, True):
        text = report.discovery_text(
            discover([SAMPLE], hash_clients=hashed), cli.dns_filter_advice()
        )
        assert max(len(line) for line in text.splitlines()) <= 80


def test_json_follows_the_documented_schema(found):
    document = json.loads(report.discovery_json(found, cli.dns_filter_advice()))
    assert document["schema"] == report.SCHEMA == "courierwatch.discover/1"
    for key in ("since", "until", "clients_hashed", "sources", "names_seen", "counts", "names",
                "pops", "actions"):  # fmt: skip
        assert key in report.__doc__ and key in document
    assert document["counts"] == {"blocked": 2, "outside": 8, "catalog": 52, "chained": 61}
    assert all(set(entry) == ENTRY_KEYS for entry in document["names"])
    by_name = {entry["name"]: entry for entry in document["names"]}
    blocked = by_name["init-p01st.push.apple.com"]
    assert (blocked["section"], blocked["group"], blocked["blocked"]) == (
        "blocked", "push", {"answered 0.0.0.0": 12})  # fmt: skip
    assert blocked["action"] == sinkhole_fix("init-p01st.push.apple.com", "push")
    cdn = by_name["e6858.dsce9.akamaiedge.net"]
    assert (cdn["section"], cdn["apple"], cdn["via"], cdn["group"]) == (
        "chained", "cname", "gspe19-ssl.ls.apple.com", "")  # fmt: skip
    assert cdn["answers"] == [{"address": "23.40.61.12", "apple": False}]
    courier = by_name["17-courier.push.apple.com"]
    assert courier["ports"] == [5223] and {"address": "2a01:b740:a42:1::12", "apple": True} in (
        courier["answers"])  # fmt: skip
    assert courier["first_seen"].endswith("Z")
    assert [p["pop"] for p in document["pops"]] == ["eur-benelux", "eu-central"]
    source = document["sources"][0]
    assert (source["kind"], source["skipped"], source["error"]) == ("pcapng", 3, "")


def test_client_addresses_are_counted_never_shown(found):
    advice = cli.dns_filter_advice()
    for hashed in (False, True):
        found = discover([SAMPLE], hash_clients=hashed)
        for text in (report.discovery_text(found, advice), report.discovery_json(found, advice)):
            assert not CLIENT_ADDRESS.search(text)
    plain = json.loads(report.discovery_json(discover([SAMPLE]), advice))
    assert all(entry["client_ids"] == [] for entry in plain["names"])


def test_hashed_clients_are_salted_per_run():
    advice = cli.dns_filter_advice()
    runs = [json.loads(report.discovery_json(discover([SAMPLE], hash_clients=True), advice))
            for _ in range(2)]  # fmt: skip
    ids = [{e["name"]: e["client_ids"] for e in run["names"]} for run in runs]
    gs = ids[0]["gs.apple.com"]
    assert len(gs) == 5 and all(re.fullmatch(r"[0-9a-f]{12}", i) for i in gs)
    assert set(gs).isdisjoint(ids[1]["gs.apple.com"])
    assert runs[0]["clients_hashed"] is True


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "courierwatch", "discover", *args],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_cli_exit_status_is_1_when_an_apple_name_is_blocked():
    done = run_cli(SAMPLE)
    assert done.returncode == 1 and done.stderr == ""
    assert done.stdout.startswith("What the site's devices ask Apple for (1 source, times UTC)")


def test_an_unreadable_source_is_one_line_and_the_others_still_count(tmp_path):
    missing = tmp_path / "gone.db"
    garbage = tmp_path / "pihole-FTL.db"
    garbage.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    done = run_cli(str(missing), SAMPLE, str(garbage), "--json")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines == [f"courierwatch: {missing}: No such file or directory",
                     f"courierwatch: {garbage}: not a readable SQLite database: "
                     "file is not a database"]  # fmt: skip
    document = json.loads(done.stdout)
    assert document["counts"]["blocked"] == 2  # the sample's data is all there
    assert [s["error"] != "" for s in document["sources"]] == [True, False, True]


def test_since_and_until_bound_the_time(tmp_path):
    # The sample runs from 08:00 to 09:00 UTC on 2025-12-01.
    done = run_cli(SAMPLE, "--json", "--since", "2025-12-01T08:30", "--until", "2025-12-01T08:40")
    document = json.loads(done.stdout)
    assert (document["since"], document["until"]) == ("2025-12-01T08:30:00Z",
                                                      "2025-12-01T08:40:00Z")  # fmt: skip
    assert document["counts"]["blocked"] == 2  # both blocked names were asked at 08:33
    assert {e["name"]: e["queries"] for e in document["names"]}["metrics.icloud.com"] == 3
    seen = [e["first_seen"] for e in document["names"] if e["first_seen"]]
    assert seen and all("2025-12-01T08:30:00Z" <= t < "2025-12-01T08:40:00Z" for t in seen)


def test_a_bad_time_is_a_usage_error():
    done = run_cli(SAMPLE, "--since", "yesterday-ish")
    assert done.returncode == 2
    assert "is neither a date or time" in done.stderr and "Traceback" not in done.stderr


def test_a_targets_file_that_cannot_be_written_is_one_line(tmp_path):
    where = tmp_path / "no" / "such" / "folder" / "discovered.yaml"
    done = run_cli(SAMPLE, "--write-targets", str(where))
    assert done.returncode == 2
    assert done.stderr == f"courierwatch: {where}: cannot write: No such file or directory\n"


def test_the_readme_shows_a_real_run(monkeypatch):
    root = make_sample.HERE.parent.parent
    command = "$ courierwatch discover tests/data/site-sample.pcapng\n"
    readme = (root / "README.md").read_text(encoding="utf-8")
    shown = readme.split(command, 1)[1].split("\n```", 1)[0]
    monkeypatch.chdir(root)
    found = discover(["tests/data/site-sample.pcapng"])
    assert shown == report.discovery_text(found, cli.dns_filter_advice())
