"""Reading pprof profiles that Pyroscope's SDKs and other pprof producers upload.

Pyrometer stores stack samples: counts of how often each stack was seen. A pprof profile
holds values of one or more sample types; this picks the one that counts CPU (or
wall-clock) samples and turns its values into counts:

- `samples/count` values are counts already;
- `cpu/nanoseconds` (and `wall/nanoseconds`) values are time, each sample worth one
  period: count = value / period, summed per stack and then rounded to the nearest whole
  sample (Pyroscope's Python, Ruby and Rust SDKs send exact multiples of the period). The
  period is the profile's own (`period_type` cpu or wall in nanoseconds), else the
  upload's `sampleRate` (period = 1 s / rate); with neither the profile is refused.

Other sample types (memory, mutex, block, goroutines) are not stack samples; a profile
with none of the above raises UnsupportedProfile, which the HTTP layer answers by
dropping that profile. Pure: bytes in, values out; every reference inside the profile
is checked, so a malformed one raises InvalidBatchError and nothing is kept.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Frame, Nanos, Stack
from pyrometer.collector.errors import BatchLimitError, InvalidBatchError
from pyrometer.proto import profile_pb2

GZIP_MAGIC = b"\x1f\x8b"
_COUNT_TYPES = (("samples", "count"),)
_TIME_TYPES = (("cpu", "nanoseconds"), ("wall", "nanoseconds"))


class UnsupportedProfile(Exception):
    """A well-formed profile that holds no CPU or wall-clock samples (memory, mutex, ...)."""


@dataclass(frozen=True, slots=True)
class StackSamples:
    """What one profile contributes: sample counts per (stack root first, thread)."""

    counts: Mapping[tuple[Stack, str], int]
    rate_hz: float | None  # from the profile's period; None when it has none
    idle_included: bool  # a wall-clock profile: idle stacks are counted too
    start_ns: Nanos  # 0 when the profile does not say
    duration_ns: Nanos  # 0 when the profile does not say

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def inflate(data: bytes, limit: int, what: str) -> bytes:
    """`data` gunzipped when it starts with gzip's magic; BatchLimitError past `limit` bytes."""
    if not data.startswith(GZIP_MAGIC):
        return data
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidBatchError(f"{what} is not valid gzip: {exc}") from None
    if len(out) > limit:
        raise BatchLimitError(f"{what} inflates past the limit of {limit} bytes")
    if not inflater.eof:
        raise InvalidBatchError(f"{what} is a truncated gzip stream")
    return out


def read_pprof(data: bytes, *, sample_rate: float | None, limit: int) -> StackSamples:
    """The stack samples of one pprof profile (gzipped or not); see the module docstring."""
    raw = inflate(data, limit, "the pprof profile")
    try:
        profile = profile_pb2.Profile.FromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise InvalidBatchError(f"not a pprof profile: {exc}") from None
    text = _Strings(list(profile.string_table))
    index, kind, unit = _pick_type(profile, text)
    period = _period_ns(profile, text, kind, unit, sample_rate)
    frames = _frames(profile, text)
    per_stack: dict[tuple[Stack, str], int] = defaultdict(int)
    for sample in profile.sample:
        if len(sample.value) != len(profile.sample_type):
            raise InvalidBatchError(
                f"a sample has {len(sample.value)} values for {len(profile.sample_type)} sample types")
        value = sample.value[index]
        if value < 0:
            raise InvalidBatchError(f"negative sample value {value}")
        if value == 0:
            continue
        stack: list[Frame] = []
        for location_id in reversed(sample.location_id):  # pprof lists the leaf first
            located = frames.get(location_id)
            if located is None:
                raise InvalidBatchError(f"a sample refers to location {location_id}, which is not defined")
            stack.extend(located)
        per_stack[(tuple(stack), _thread(sample, text))] += value
    divisor = period if unit == "nanoseconds" else 0  # count values are counts already
    counts = {key: _count(value, divisor) for key, value in per_stack.items()}
    return StackSamples(
        counts={key: n for key, n in counts.items() if n > 0},
        rate_hz=NANOS_PER_SECOND / period if period else None,
        idle_included=kind == "wall",
        start_ns=max(profile.time_nanos, 0), duration_ns=max(profile.duration_nanos, 0))


class _Strings:
    """pprof's string table, each index checked."""

    def __init__(self, table: list[str]) -> None:
        if table and table[0] != "":
            raise InvalidBatchError("string_table[0] of the pprof profile is not empty")
        self._table = table

    def __call__(self, index: int) -> str:
        if not 0 <= index < len(self._table):
            raise InvalidBatchError(f"string index {index} is outside the profile's string table")
        return self._table[index]


def _pick_type(profile: profile_pb2.Profile, text: _Strings) -> tuple[int, str, str]:
    types = [(text(t.type), text(t.unit)) for t in profile.sample_type]
    if not types:
        raise InvalidBatchError("the pprof profile has no sample_type")
    for wanted in _TIME_TYPES + _COUNT_TYPES:
        if wanted in types:
            return types.index(wanted), *wanted
    raise UnsupportedProfile(
        "Pyrometer stores CPU and wall-clock stack samples; this profile's sample types are "
        + ", ".join(f"{kind}/{unit}" for kind, unit in types))


def _period_ns(profile: profile_pb2.Profile, text: _Strings, kind: str, unit: str,
               sample_rate: float | None) -> int:
    """Nanoseconds one sample stands for; 0 when the values are counts and nothing says."""
    period_unit = text(profile.period_type.unit) if profile.HasField("period_type") else ""
    if profile.period > 0 and period_unit == "nanoseconds":
        return int(profile.period)
    if sample_rate:
        return round(NANOS_PER_SECOND / sample_rate)
    if unit == "nanoseconds":
        raise InvalidBatchError(
            f"{kind}/nanoseconds values but no period in nanoseconds and no sampleRate: "
            "cannot tell how many samples they are")
    return 0


def _count(value: int, period_ns: int) -> int:
    # values in nanoseconds are a whole number of periods, give or take rounding upstream
    return value if period_ns == 0 else (2 * value + period_ns) // (2 * period_ns)


def _frames(profile: profile_pb2.Profile, text: _Strings) -> dict[int, list[Frame]]:
    """Each location id's frames, outermost first (pprof lists inlined callees first)."""
    functions = {f.id: f for f in profile.function}
    mappings = {m.id: m for m in profile.mapping}
    out: dict[int, list[Frame]] = {}
    for location in profile.location:
        if location.id == 0:
            raise InvalidBatchError("a pprof location has id 0")
        frames = []
        for line in reversed(location.line):
            function = functions.get(line.function_id)
            if function is None:
                raise InvalidBatchError(f"a location refers to function {line.function_id}, "
                                        "which is not defined")
            frames.append(Frame(text(function.name), text(function.filename), max(0, line.line)))
        if not frames:  # not symbolized: the address stands for the function
            mapping = mappings.get(location.mapping_id)
            file = text(mapping.filename) if mapping is not None else ""
            frames.append(Frame(f"0x{location.address:x}", file, 0))
        out[location.id] = frames
    return out


def _thread(sample: profile_pb2.Sample, text: _Strings) -> str:
    """The thread a sample was taken on, from the labels Pyroscope's SDKs attach."""
    name, ident = "", ""
    for label in sample.label:
        key = text(label.key)
        if key == "thread_name":
            name = text(label.str)
        elif key == "thread_id":
            ident = text(label.str) if label.str else str(label.num)
    if name and ident:
        return f"{name} ({ident})"
    return name or ident
