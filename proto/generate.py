"""Regenerate plano_extproc/api/*_pb2*.py from proto/ (grpcio-tools). tests/test_proto.py checks they are current."""

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent


def generate(out_dir: pathlib.Path) -> None:
    args = ["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", f"--pyi_out={out_dir}"]
    args += [str(p) for p in sorted((ROOT / "proto").rglob("*.proto"))]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


if __name__ == "__main__":
    generate(ROOT)
