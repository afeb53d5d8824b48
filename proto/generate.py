"""Regenerate the Python modules of the .proto files in this folder.

    python proto/generate.py            # writes beside the .proto files
    python proto/generate.py --out DIR  # writes under DIR (the staleness test uses this)

The .proto files sit at paths that mirror their Python package (courierwatch/v1/), so the
generated imports need no rewriting. Each gets its messages (*_pb2.py, *_pb2.pyi) and, if it
declares a service, its gRPC stubs (*_pb2_grpc.py). Output depends on the grpcio-tools version,
which is pinned in pyproject.toml for that reason.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).resolve().parent
_SERVICE = re.compile(r"^\s*service\s+\w+", re.M)


def proto_files() -> list[Path]:
    return sorted(HERE.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    include = Path(protoc.__file__).parent / "_proto"
    for proto in proto_files():
        args = ["protoc", f"-I{HERE}", f"-I{include}", f"--python_out={out_dir}",
                f"--pyi_out={out_dir}"]  # fmt: skip
        if _SERVICE.search(proto.read_text()):  # else the gRPC module would be empty
            args.append(f"--grpc_python_out={out_dir}")
        args.append(str(proto.relative_to(HERE)))
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="output root (default: proto/)")
    generate(parser.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
