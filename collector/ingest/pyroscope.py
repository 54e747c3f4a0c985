"""Pyroscope uploads as ingest batches, so they pass the very checks an agent's batch does.

Pyroscope's SDKs name what they send with labels: `service_name` (or the app name of
`/ingest?name=app.cpu{k=v}`) becomes the service, `instance` the instance, `version` the
version, every other label is kept as a label; labels starting with `__` (Pyroscope's
own, such as `__name__`) are dropped. An upload is turned into an ingest `Batch` with
its own dictionary and decoded by a fresh `StreamDecoder`, so the limits (stack depth,
string length, rows, labels, times) and the validation are the gRPC ingest's own, and a
bad upload is refused before anything is stored. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pyrometer.agent.shared.model import Frame, Nanos, Stack
from pyrometer.collector.errors import BatchLimitError, InvalidBatchError
from pyrometer.collector.ingest.decode import StreamDecoder
from pyrometer.collector.ingest.limits import DecodeLimits
from pyrometer.collector.ingest.pprof_read import UnsupportedProfile
from pyrometer.collector.storage.batch import DecodedBatch
from pyrometer.proto import ingest_pb2

SERVICE_LABEL = "service_name"
INSTANCE_LABEL = "instance"
# the suffixes of /ingest's `name=app.<kind>` that are stack samples; "" is no suffix
CPU_KINDS = frozenset({"", "cpu", "itimer"})
WALL_KINDS = frozenset({"wall"})
_NAME = re.compile(r"^(?P<app>[^{}]*?)(?:\{(?P<labels>[^{}]*)\})?$")
_OTHER_KINDS = frozenset({
    "inuse_objects", "inuse_space", "alloc_objects", "alloc_space", "goroutines",
    "mutex_count", "mutex_duration", "block_count", "block_duration", "lock_count",
    "lock_duration", "alloc_in_new_tlab_objects", "alloc_in_new_tlab_bytes",
    "alloc_outside_tlab_objects", "alloc_outside_tlab_bytes", "exceptions",
})


@dataclass(frozen=True, slots=True)
class SeriesLabels:
    """Who an upload is from, in Pyrometer's terms."""

    service: str
    instance: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # sorted; "version" among them if given


def series_labels(pairs: Iterable[tuple[str, str]]) -> SeriesLabels:
    """Pyrometer's identity of a Pyroscope series from its label pairs."""
    seen: dict[str, str] = {}
    for name, value in pairs:
        if name in seen:
            raise InvalidBatchError(f"label {name[:64]!r} is given twice")
        seen[name] = value
    service = seen.pop(SERVICE_LABEL, "")
    if not service:
        raise InvalidBatchError("the series has no service_name label")
    instance = seen.pop(INSTANCE_LABEL, "")
    kept = sorted((k, v) for k, v in seen.items() if not k.startswith("__"))
    return SeriesLabels(service, instance, tuple(kept))


def parse_name(name: str) -> tuple[SeriesLabels, str]:
    """`app.cpu{k=v,...}` (/ingest's `name`) as (labels, profile kind, e.g. "cpu")."""
    match = _NAME.match(name.strip())
    if match is None:
        raise InvalidBatchError(f"name {name[:64]!r} is not app.kind{{label=value,...}}")
    app = match.group("app").strip()
    kind = ""
    head, dot, tail = app.rpartition(".")
    if dot and (tail in CPU_KINDS or tail in WALL_KINDS or tail in _OTHER_KINDS):
        app, kind = head, tail
    pairs = [(SERVICE_LABEL, app)]
    for item in (match.group("labels") or "").split(","):
        if not item.strip():
            continue
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise InvalidBatchError(f"label {item[:64]!r} in name is not key=value")
        pairs.append((key.strip(), value.strip()))
    if not app:
        raise InvalidBatchError("name has no application name (name=app.cpu{...})")
    return series_labels(pairs), kind


def check_kind(kind: str) -> bool:
    """True for a wall-clock kind, False for CPU; UnsupportedProfile for any other."""
    if kind in CPU_KINDS:
        return False
    if kind in WALL_KINDS:
        return True
    raise UnsupportedProfile(f"Pyrometer stores CPU and wall-clock stack samples, not {kind[:64]!r}")


def read_folded(data: bytes, limits: DecodeLimits) -> dict[tuple[Stack, str], int]:
    """`a;b;c 12` lines (root first, the count last) as sample counts per stack."""
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise InvalidBatchError(f"folded profile is not UTF-8: {exc}") from None
    counts: dict[tuple[Stack, str], int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        stack_text, _, count_text = line.rstrip().rpartition(" ")
        if not stack_text or not count_text.isdigit():
            raise InvalidBatchError(f"folded line {number} is not 'frame;frame;... count'")
        count = int(count_text)
        if count > limits.max_count:
            raise BatchLimitError(f"folded line {number}: count {count} exceeds the limit of "
                                  f"{limits.max_count}")
        if count == 0:
            continue
        stack = tuple(Frame(name, "", 0) for name in stack_text.split(";"))
        counts[(stack, "")] = counts.get((stack, ""), 0) + count
    return counts


@dataclass(frozen=True, slots=True)
class Window:
    start_ns: Nanos
    end_ns: Nanos
    rate_hz: float
    idle_included: bool


def to_batch(labels: SeriesLabels, counts: Mapping[tuple[Stack, str], int], window: Window,
             agent_id: str) -> ingest_pb2.Batch:
    """One ingest Batch (seq 1, its own dictionary) holding `counts` over `window`."""
    strings: dict[str, int] = {}
    frames: dict[tuple[int, int, int], int] = {}
    delta = ingest_pb2.DictionaryDelta()
    profile = ingest_pb2.ProfileWindow(
        start_unix_nanos=window.start_ns, end_unix_nanos=window.end_ns, rate_hz=window.rate_hz,
        idle_included=window.idle_included)

    def sid(text: str) -> int:
        if text not in strings:
            strings[text] = len(strings)
            delta.strings.append(text)
        return strings[text]

    for (stack, thread), count in counts.items():
        refs = []
        for frame in stack:
            key = (sid(frame.name), sid(frame.file), frame.line)
            if key not in frames:
                frames[key] = len(frames)
                delta.frames.add(name=key[0], file=key[1], line=_line(frame.line))
            refs.append(frames[key])
        profile.stack_ids.append(len(delta.stacks))
        delta.stacks.add(frames=refs)
        profile.counts.append(count)
        profile.thread_ids.append(sid(thread))
    agent = ingest_pb2.AgentIdentity(agent_id=agent_id, service=labels.service,
                                     instance=labels.instance, labels=dict(labels.labels))
    return ingest_pb2.Batch(agent=agent, seq=1, dictionary=delta, profile=profile)


def _line(line: int) -> int:
    if not 0 <= line < 2**31:
        raise InvalidBatchError(f"line number {line} is out of range")
    return line


def decode(batch: ingest_pb2.Batch, limits: DecodeLimits, now_ns: Nanos) -> DecodedBatch:
    """The batch checked exactly as the gRPC ingest checks an agent's first batch."""
    if len(batch.profile.counts) > limits.max_rows:  # before the decoder expands anything
        raise BatchLimitError(f"rows in one profile: {len(batch.profile.counts)} exceeds the "
                              f"limit of {limits.max_rows}")
    return StreamDecoder(limits).decode(batch, now_ns)
