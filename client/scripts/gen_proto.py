"""Regenerate emotion_ai/_proto/tfs_pb2.py(i) from tfs.proto (needs grpcio-tools).

    python client/scripts/gen_proto.py

The generated module is committed, so installing the client never needs protoc.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

SRC = Path(__file__).resolve().parents[1] / "src"
PROTO = "emotion_ai/_proto/tfs.proto"


def main() -> int:
    include = str(resources.files("grpc_tools") / "_proto")
    args = ["protoc", f"-I{SRC}", f"-I{include}", f"--python_out={SRC}", f"--pyi_out={SRC}", PROTO]
    return protoc.main(args)


if __name__ == "__main__":
    sys.exit(main())
