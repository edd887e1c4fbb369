#!/usr/bin/env python3
"""Generates the Python gRPC stubs for triad from the proto files alone.

    python generate.py [OUT_DIR]        # default OUT_DIR: ./gen next to this file

runs (from the repository root)

    python -m grpc_tools.protoc -I proto --python_out=OUT_DIR --grpc_python_out=OUT_DIR \
        triad/v1/triad.proto

which writes OUT_DIR/triad/v1/triad_pb2.py (messages) and triad_pb2_grpc.py (service stubs).
Put OUT_DIR on sys.path, then `from triad.v1 import triad_pb2, triad_pb2_grpc`.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "proto"))
PROTO = "triad/v1/triad.proto"


def generate(out_dir: str) -> str:
    """Runs protoc into out_dir and returns it; raises RuntimeError if protoc fails."""
    os.makedirs(out_dir, exist_ok=True)
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        PROTO,
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"protoc failed (exit {r.returncode}): {r.stderr.strip()}")
    return out_dir


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "gen")
    generate(out)
    print(f"stubs written to {os.path.join(out, 'triad', 'v1')}")
