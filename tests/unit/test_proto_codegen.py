"""The committed generated code must be what `make proto` produces from the .proto files."""

from __future__ import annotations

from pathlib import Path

from pyrometer.proto import codegen


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    produced = codegen.generate(tmp_path)
    assert produced, "codegen produced nothing"
    stale = [p.name for p in produced
             if not (codegen.PROTO_DIR / p.name).exists()
             or (codegen.PROTO_DIR / p.name).read_bytes() != p.read_bytes()]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"
