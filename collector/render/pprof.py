"""pprof: a gzipped ``perftools.profiles.Profile`` (github.com/google/pprof profile.proto).

What is written, so that ``go tool pprof``, Grafana, Parca or Pyroscope read it:

- ``sample_type`` is ``[samples/count, cpu/nanoseconds]``; each sample's values are
  ``[count, count * period_ns]``. When the profile includes idle stacks the second type
  is ``wall/nanoseconds`` instead, because idle time is not CPU time and calling it CPU
  would mislead anyone adding it up. ``period_type`` is that same second type and
  ``period`` is ``profile.period_ns`` (0, and so are all the time values, when the rate
  is unknown).
- ``string_table[0]`` is ``""`` as the format requires; strings are interned once.
- Each distinct function ``(name, file)`` is one ``Function`` (name and system_name
  both the Python name, since Python has no mangling); each distinct frame
  ``(name, file, line)`` is one ``Location`` holding one ``Line``. Ids start at 1, in
  order of first appearance. No ``Mapping``: Python code is not mapped from a binary.
- ``Sample.location_id`` lists the stack leaf first, as the format requires (our stacks
  are root first).
- ``time_nanos`` is the window start and ``duration_nanos`` its length.
- A ``notice`` becomes a ``comment``, which ``pprof -comments`` prints.
"""

from __future__ import annotations

import gzip

from pyrometer.agent.shared.model import Frame
from pyrometer.collector.model import Profile
from pyrometer.proto import profile_pb2 as pb


class _Strings:
    """The profile's string table: index 0 is always the empty string."""

    def __init__(self, out: pb.Profile) -> None:
        self._out = out
        self._index: dict[str, int] = {"": 0}
        out.string_table.append("")

    def __call__(self, text: str) -> int:
        found = self._index.get(text)
        if found is None:
            found = self._index[text] = len(self._index)
            self._out.string_table.append(text)
        return found


class _Symbols:
    """Functions and locations, each created once and numbered from 1."""

    def __init__(self, out: pb.Profile, strings: _Strings) -> None:
        self._out = out
        self._strings = strings
        self._functions: dict[tuple[str, str], int] = {}
        self._locations: dict[Frame, int] = {}

    def location(self, frame: Frame) -> int:
        found = self._locations.get(frame)
        if found is None:
            found = self._locations[frame] = len(self._locations) + 1
            loc = self._out.location.add(id=found)
            loc.line.add(function_id=self._function(frame), line=max(frame.line, 0))
        return found

    def _function(self, frame: Frame) -> int:
        key = (frame.name, frame.file)
        found = self._functions.get(key)
        if found is None:
            found = self._functions[key] = len(self._functions) + 1
            name = self._strings(frame.name)
            self._out.function.add(
                id=found, name=name, system_name=name, filename=self._strings(frame.file)
            )
        return found


def time_type(profile: Profile) -> str:
    """``cpu``, or ``wall`` when idle stacks are counted (see the module docstring)."""
    return "wall" if profile.idle_included else "cpu"


def pprof_message(profile: Profile, *, notice: str = "") -> pb.Profile:
    """The ungzipped protobuf message (tests and other encoders use it directly)."""
    out = pb.Profile()
    strings = _Strings(out)
    symbols = _Symbols(out, strings)
    out.sample_type.add(type=strings("samples"), unit=strings("count"))
    time_kind = strings(time_type(profile))
    nanoseconds = strings("nanoseconds")
    out.sample_type.add(type=time_kind, unit=nanoseconds)
    out.period_type.type = time_kind
    out.period_type.unit = nanoseconds
    out.period = profile.period_ns
    out.time_nanos = profile.start_ns
    out.duration_nanos = profile.duration_ns
    if notice:
        out.comment.append(strings(notice))
    for stack, count in profile.samples:
        out.sample.add(
            location_id=[symbols.location(f) for f in reversed(stack)],
            value=[count, count * profile.period_ns],
        )
    return out


def render_pprof(profile: Profile, *, notice: str = "") -> bytes:
    """Render ``profile`` as gzipped pprof protobuf bytes."""
    # mtime=0: the same profile always gives the same bytes (cacheable, diffable).
    return gzip.compress(pprof_message(profile, notice=notice).SerializeToString(), mtime=0)
