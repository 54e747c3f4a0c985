"""Regenerate the Python modules in proto/ from the .proto sources (`make proto`).

The sources are compiled as if they lived at ``pyrometer/proto/NAME.proto`` so that the
generated modules import each other as ``pyrometer.proto.NAME_pb2``, which is where
they are installed (see pyproject.toml's package-dir). Output is deterministic for the
pinned grpcio-tools and mypy-protobuf; tests/test_proto_codegen.py fails when the
committed files differ from a fresh generation.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SOURCES = ("ingest.proto", "profile.proto", "pyroscope_types.proto", "push.proto", "querier.proto")
# Which sources define gRPC services (those get a _pb2_grpc.py).
SERVICES = ("ingest.proto",)


def generate(out_dir: Path) -> list[Path]:
    """Compile SOURCES into out_dir; returns the generated files."""
    from grpc_tools import protoc  # dev dependency, imported only here

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pkg = root / "pyrometer" / "proto"
        pkg.mkdir(parents=True)
        for name in SOURCES:
            shutil.copyfile(PROTO_DIR / name, pkg / name)
        gen = root / "gen"
        gen.mkdir()
        well_known = Path(protoc.__file__).parent / "_proto"
        bindir = Path(sys.executable).parent  # mypy-protobuf's plugins live beside python
        for name in SOURCES:
            args = [
                "protoc",
                f"-I{root}",
                f"-I{well_known}",
                f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
                f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
                f"--python_out={gen}",
                f"--mypy_out={gen}",
            ]
            if name in SERVICES:
                args += [f"--grpc_python_out={gen}", f"--mypy_grpc_out={gen}"]
            args.append(str(pkg / name))
            if protoc.main(args) != 0:
                raise RuntimeError(f"protoc failed on {name}")
        produced = []
        for path in sorted((gen / "pyrometer" / "proto").iterdir()):
            target = out_dir / path.name
            shutil.copyfile(path, target)
            produced.append(target)
        return produced


def main() -> int:
    for path in generate(PROTO_DIR):
        print(f"wrote {path.relative_to(PROTO_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
