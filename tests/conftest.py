"""Shared test setup: the little Apple in tests/fakeapple is importable as `fakeapple`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

pytest_plugins = ["fakeapple.probing"]
