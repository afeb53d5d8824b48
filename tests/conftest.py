"""Shared test setup: the little Apple in tests/fakeapple is importable as `fakeapple`, the
probes started run on asyncio's loop, and the `root` marker (declared in pyproject.toml) skips
outside CI, fails under CI."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
# The probe processes the tests start run on the loop a default install runs (asyncio's own),
# whether or not tests/run installed the optional uvloop; tests/test_eventloop.py tests both.
os.environ.setdefault("COURIERWATCH_EVENT_LOOP", "asyncio")

pytest_plugins = ["fakeapple.probing"]


@pytest.hookimpl(tryfirst=True)  # before any skipif of the test's own
def pytest_runtest_setup(item: pytest.Item) -> None:
    # CI (.ci/run) runs as root, so a root-only test that cannot run there is a failure.
    marker = item.get_closest_marker("root")
    if marker is None or os.geteuid() == 0:
        return
    message = f"needs root: {marker.kwargs.get('reason', 'see the test')}"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
