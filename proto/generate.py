"""Regenerate the *_pb2*.py modules under plano_extproc/ from proto/ (grpcio-tools). tests/test_proto.py
checks they are current.

Every proto gets message code and type stubs; only protos that declare a service get gRPC stubs (the
vendored Envoy message under proto/plano_extproc/bootstrap/ has none)."""

import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _protoc(args: list[str]) -> None:
    if protoc.main(["protoc", f"-I{ROOT / 'proto'}", *args]) != 0:
        sys.exit("protoc failed")


def generate(out_dir: pathlib.Path) -> None:
    protos = sorted((ROOT / "proto").rglob("*.proto"))
    _protoc([f"--python_out={out_dir}", f"--pyi_out={out_dir}", *map(str, protos)])
    services = [p for p in protos if any(line.startswith("service ") for line in p.read_text().splitlines())]
    if services:
        _protoc([f"--grpc_python_out={out_dir}", *map(str, services)])


if __name__ == "__main__":
    generate(ROOT)
