"""The on-disk spool and the outbox over it: files, bounds, damage, and re-encoding.

No network here: the outbox is driven the way the shipper drives it, and spooled
batches are decoded by the collector's own stream decoder.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pytest

from pyrometer.agent import config
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import NANOS_PER_SECOND, ProfileWindow, SampleKey, Telemetry
from pyrometer.agent.ship.encoder import (
    AgentIdentity,
    SpooledBatchError,
    StreamEncoder,
    encode_standalone,
)
from pyrometer.agent.ship.outbox import Content, Outbox, ShipperStats
from pyrometer.agent.ship.spool import MAGIC, Spool, SpoolError, SpoolKey
from pyrometer.collector.ingest.decode import StreamDecoder
from support.ingest_builder import BASE_NS, NOW_NS, decoded_counts, stack
from support.telemetry_builder import request

S = NANOS_PER_SECOND
IDENTITY = AgentIdentity("agent-old", "svc", "pod-1", "host-1", 100)


def window(i: int, name: str = "forward") -> ProfileWindow:
    start = BASE_NS + i * 10 * S
    key = SampleKey(stack("main", "serve", name), "MainThread")
    return ProfileWindow(start, start + 10 * S, 100.0, {key: 10 + i})


def content(i: int) -> Content:
    return Content(window(i), Telemetry(requests=(request(i, route=f"/r{i % 2}"),)), "1.0")


def encode(seq: int, body: Content) -> bytes:
    return encode_standalone(IDENTITY, seq, body.window, body.telemetry, body.version)


def outbox(spool: Spool | None, **bounds: int) -> Outbox:
    return Outbox(ShipperStats(), encode, spool, agent_id=IDENTITY.agent_id, **bounds)


def drain(box: Outbox) -> list[int]:
    """Take every batch as a stream would, ack it, and return the seqs in order."""
    seqs = []
    while (taken := box.next_unsent()) is not None:
        box.ack(taken[0].seq)
        seqs.append(taken[0].seq)
    return seqs


def test_a_batch_round_trips_through_the_spool_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    keys = [SpoolKey(BASE_NS + run, seq, "a1") for run in (2, 1) for seq in (10, 9)]
    for key in keys:
        spool.write(key, f"payload {key.seq}".encode())
    with pytest.raises(SpoolError, match="in use by another agent"):
        Spool(tmp_path)
    spool.close()
    again = Spool(tmp_path)
    assert again.keys() == sorted(keys) and [k.run_ns - BASE_NS for k in again.keys()] == [1, 1, 2, 2]
    assert again.read(keys[0]) == b"payload 10"
    again.remove(keys[0])
    assert keys[0] not in again.keys() and not (tmp_path / keys[0].name).exists()


def test_an_agent_id_cannot_escape_the_directory() -> None:
    with pytest.raises(ValueError):
        SpoolKey(1, 1, "../etc")


def test_spilled_batches_are_kept_on_disk_and_read_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    box = outbox(spool, memory_batches=2)
    for seq in range(1, 6):
        box.add(seq, content(seq))
    assert box.on_disk[0] == 3 and box.stats.spooled == 3  # the oldest three; two in memory
    assert drain(box) == [1, 2, 3, 4, 5]
    assert box.on_disk == (0, 0) and not list(tmp_path.glob("*.batch"))


def test_disconnected_writes_through_and_persist_keeps_the_rest(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    box = outbox(spool)
    box.add(1, content(1))
    assert box.on_disk[0] == 0  # connected: the happy path does not touch the disk
    box.connected = False
    box.add(2, content(2))
    assert box.on_disk[0] == 2  # down: both on disk, so a SIGKILL now loses nothing
    box.connected = True
    box.add(3, content(3))
    box.next_unsent()  # seq 1 on the wire
    box.persist()
    assert box.on_disk[0] == 3
    spool.close()
    successor = outbox(Spool(tmp_path))
    assert drain(successor) == [1, 2, 3]


def test_the_bound_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    one = len(encode(1, content(1))) + len(MAGIC) + 4
    box = outbox(Spool(tmp_path), spool_max_bytes=3 * one + one // 2)
    box.connected = False
    for seq in range(1, 7):
        box.add(seq, content(seq))
    assert box.stats.dropped_spool == 3 and box.stats.dropped == 3
    assert drain(box) == [4, 5, 6]


def test_the_memory_bound_applies_without_a_spool() -> None:
    box = outbox(None, max_pending=3)
    box.add(1, content(1))
    box.next_unsent()  # seq 1 is on the wire: never the one dropped
    for seq in range(2, 6):
        box.add(seq, content(seq))
    assert box.stats.dropped_overflow == 2
    box.ack(1)
    assert drain(box) == [4, 5]


def test_damaged_and_stray_files_are_skipped_with_a_log(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spool = Spool(tmp_path)
    box = outbox(spool)
    box.connected = False
    for seq in range(1, 5):
        box.add(seq, content(seq))
    spool.close()
    names = sorted(p.name for p in tmp_path.glob("*.batch"))
    flipped = bytearray((tmp_path / names[0]).read_bytes())
    flipped[-1] ^= 0xFF
    (tmp_path / names[0]).write_bytes(bytes(flipped))
    (tmp_path / names[1]).write_bytes((tmp_path / names[1]).read_bytes()[:20])  # truncated
    (tmp_path / names[2]).write_bytes(b"")
    (tmp_path / (names[3] + ".tmp")).write_bytes(b"half a write")
    (tmp_path / "notes.txt").write_text("not a batch")
    caplog.set_level(logging.INFO)
    successor = outbox(Spool(tmp_path))
    assert drain(successor) == [4]
    assert successor.stats.dropped_corrupt == 3
    assert caplog.text.count("is corrupt") == 3 and "ignoring notes.txt" in caplog.text
    assert not list(tmp_path.glob("*.tmp"))


def test_a_spooled_batch_reencodes_onto_a_live_stream() -> None:
    live = StreamEncoder(AgentIdentity("agent-new", "svc", "pod-1", "host-1", 200))
    decoder = StreamDecoder()
    # the live stream already has a dictionary of its own
    decoder.decode(live.encode(1, window(0, "other"), Telemetry(requests=(request(0),))), NOW_NS)
    body = content(3)
    batch = live.reencode(encode(7, body))
    decoded = decoder.decode(batch, NOW_NS)
    assert (batch.agent.agent_id, batch.seq) == ("agent-old", 7)  # identity kept for dedupe
    assert batch.dictionary.string_base > 0
    assert body.window is not None
    # pid 0 ("the target") is filed under the spooling agent's target pid, 100
    expected = {SampleKey(k.stack, k.thread, 100): n for k, n in body.window.counts.items()}
    assert decoded_counts(decoded) == expected
    assert body.telemetry is not None and decoded.telemetry.requests == body.telemetry.requests
    with pytest.raises(SpooledBatchError):
        live.reencode(b"\x0a\xff not a batch")


def parse_agent(argv: list[str], env: dict[str, str]) -> config.AgentConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    base = ["--collector", "h:1", "--service", "svc/a b", "--pid", "1"]
    return config.resolve(parser.parse_args(base + argv), env)


def test_spool_flags_and_their_defaults(tmp_path: Path) -> None:
    default = parse_agent([], {})
    assert default.spool_max_bytes == 64 << 20
    assert default.spool_dir is not None and default.spool_dir.endswith(
        f"pyrometer-spool-{os.geteuid()}/svc_a_b_h_1")
    state = parse_agent([], {"XDG_STATE_HOME": str(tmp_path)})
    assert state.spool_dir == str(tmp_path / "pyrometer" / "spool" / "svc_a_b_h_1")
    assert parse_agent(["--spool-dir", "off"], {}).spool_dir is None
    chosen = parse_agent(["--spool-max-bytes", "2GiB"], {"PYROMETER_SPOOL_DIR": "/x"})
    assert (chosen.spool_dir, chosen.spool_max_bytes) == ("/x", 2 << 30)
    assert parse_agent([], {"PYROMETER_SPOOL_MAX_BYTES": "1048576"}).spool_max_bytes == 1 << 20
    for bad in ("lots", "10K", "-5M"):
        with pytest.raises(ConfigError, match="--spool-max-bytes"):
            parse_agent([f"--spool-max-bytes={bad}"], {})


def test_a_spool_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give a directory away")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 12345, 12345)
    with pytest.raises(SpoolError, match="not a directory owned by this user"):
        Spool(theirs)
