"""The discover benchmark stays runnable: a tiny run prints its table (speed is not checked
here; the figures are in tests/bench/RESULTS-discover.md)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

BENCH = Path(__file__).resolve().parent / "bench" / "discover.py"


def test_the_benchmark_runs_and_prints_every_input():
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rows", "2000", "--packets", "400", "--names", "60"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    rows = [line for line in done.stdout.splitlines() if line.startswith("| FTL") or
            line.startswith("| pcap")]  # fmt: skip
    assert len(rows) == 12
    records = [int(row.split("|")[2].replace(",", "")) for row in rows]
    assert all(count > 0 for count in records)  # every input was read
