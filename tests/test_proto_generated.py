"""The committed gRPC modules must be exactly what `python proto/generate.py` makes now."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "proto"


def _generator():
    spec = importlib.util.spec_from_file_location("generate", ROOT / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_is_current(tmp_path):
    _generator().generate(tmp_path)
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*"))
    assert fresh, "the generator produced nothing"
    stale = [str(p) for p in fresh if (ROOT / p).read_bytes() != (tmp_path / p).read_bytes()]
    assert not stale, f"stale generated code, run `python proto/generate.py`: {stale}"


def test_every_generated_file_is_committed(tmp_path):
    _generator().generate(tmp_path)
    fresh = {p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*.py*")}
    committed = {p.relative_to(ROOT) for p in ROOT.rglob("*_pb2*.py*")}
    assert fresh == committed
