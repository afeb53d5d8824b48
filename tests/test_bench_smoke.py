"""The collector benchmarks (tests/bench) still run: each in a tiny configuration, with a real
collector process, printing its table. Figures are not checked here (RESULTS.md has them)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).parent / "bench"
sys.path.insert(0, str(BENCH))

import workload  # noqa: E402 - from tests/bench, found through the line above

from courierwatch.v1 import courierwatch_pb2 as pb  # noqa: E402


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=90)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.integration
def test_ingest_benchmark_prints_its_table():
    out = run("ingest.py", "--probes=3", "--checks=4", "--batch=8", "--warmup=0.5",
              "--seconds=1", "--visible-rate=100", "--markers=8")  # fmt: skip
    assert "| probes | results/s |" in out
    assert out.rstrip().splitlines()[-1].startswith("|      3 |")


@pytest.mark.integration
def test_exposition_benchmark_prints_its_table():
    out = run("exposition.py", "--series=300", "--checks=10", "--period=0.5", "--scrapes=1")
    assert "| live series |" in out
    assert out.rstrip().splitlines()[-1].startswith("|")


@pytest.mark.integration
def test_remote_write_benchmark_prints_its_table():
    out = run("remotewrite.py", "--stores=victoria-metrics", "--probes=2", "--checks=5",
              "--seconds=0.5", "--rate=100")  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert [row.split("|")[1].strip() for row in rows[2:]] == ["encoder only", "victoria-metrics"]


@pytest.mark.integration
def test_modes_benchmark_prints_remote_write_and_scrape_side_by_side():
    out = run("modes.py", "--series=2000", "--stores=victoria-metrics", "--seconds=1",
              "--period=0.5", "--markers=2")  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert rows[0].startswith("|") and "results/CPU-s" in rows[0]
    assert [row.split("|")[1].strip() for row in rows[2:]] == [
        "remote write, victoria-metrics", "scrape"]


@pytest.mark.integration
def test_modes_benchmark_times_the_http_side_of_a_fleet():
    out = run("modes.py", "--fleet=3", "--seconds=1", "--rate=300")
    rows = [line for line in out.splitlines() if line.startswith("|")]
    assert [row.split("|")[1].strip() for row in rows[2:]] == [
        "/metrics", "/healthz", "/api/status"]


def test_a_reused_batch_carries_new_sequence_numbers_and_a_marker():
    checks = workload.results(3, time.time())
    (template,) = workload.templates(checks, 6)
    raw = template.encode(7) + workload.marker(template.last_seq(7) + 1, 1.5)
    results = pb.ProbeMessage.FromString(raw).batch.results
    assert [r.seq for r in results] == [7 << workload.POSITION_BITS | i for i in range(7)]
    assert [r.target for r in results[:6]] == [c.target for c in checks] * 2
    assert results[6].target == workload.MARKER_TARGET
    assert results[6].started_at.ToNanoseconds() == 1_500_000_000


@pytest.mark.integration
@pytest.mark.root(reason="the soak runs in network and PID namespaces of its own")
def test_soak_benchmark_prints_its_table():
    done = subprocess.run([sys.executable, str(BENCH / "soak.py"), "--smoke"],
                          capture_output=True, text=True, timeout=110)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert "| t s | probe RSS MB | probe fds |" in done.stdout
    rows = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(rows) >= 3  # the header, its rule and at least one sample
    assert "\nprobe: RSS " in done.stdout and "\ncollector: RSS " in done.stdout
