"""The probe benchmarks (tests/bench/probe_*.py, nfqueue_delay.py) still run: each in a tiny
configuration, asserting it finishes and prints its table. Speed is the benchmarks' business,
never asserted here.

The accuracy ones need root, ip, iptables, ping and blackbox_exporter: skipped without them, a
failure under CI, where tests/run has installed them before pytest started."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from promserver import require

pytestmark = [pytest.mark.integration]

BENCH = Path(__file__).parent / "bench"
ROOT = os.geteuid() == 0
BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
NAMESPACES = "network namespaces, iptables, NFQUEUE"


def run(script: str, *args: str, seconds: float = 100) -> str:
    done = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True, text=True, timeout=seconds, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def require_all(*commands: str) -> None:
    for command in commands:
        require(command)


@pytest.mark.timeout(120)
def test_footprint_prints_its_table():
    # With root and blackbox_exporter both tools run, in a namespace; otherwise the probe alone.
    both = ROOT and shutil.which(BLACKBOX) and shutil.which("iptables")
    out = run("probe_footprint.py", "--hosts=3", "--interval=2", "--warmup=3", "--duration=4",
              *([] if both else ["--no-blackbox"]))  # fmt: skip
    assert "CPU s / 1,000 checks" in out and "courierwatch probe |" in out
    assert "peak RSS" in out
    if both:
        assert "blackbox_exporter |" in out


@pytest.mark.root(reason=NAMESPACES)
@pytest.mark.timeout(120)
def test_injector_measures_itself_with_ping():
    require_all("ip", "iptables", "ping")
    out = run("nfqueue_delay.py", "--delay=20ms", "--count=20", "--interval=0.01")
    assert "ping RTT |" in out and "holder: released" in out


@pytest.mark.root(reason=NAMESPACES)
@pytest.mark.timeout(180)
def test_accuracy_prints_its_table():
    require_all("ip", "iptables", "ping", BLACKBOX)
    out = run("probe_accuracy.py", "--hosts=3", "--interval=2", "--warmup=3", "--phase=5",
              "--delay=20ms", "--ping-interval=0.02", seconds=170)  # fmt: skip
    assert "|error| p99 ms" in out
    assert "courierwatch: tls TLS handshake" in out
    assert "blackbox_exporter: http TLS handshake" in out
