"""speedscope's file format (https://www.speedscope.app/file-format-schema.json).

One file holds one "sampled" profile: ``shared.frames`` lists each distinct frame
``(name, file, line)`` once (``line`` left out when unknown), each sample is the list of
its frames' indices root first, and its weight is its sample count, so ``unit`` is
``"none"`` and the profile spans ``startValue`` 0 to ``endValue`` = total samples.
Frames keep their line, as py-spy's own speedscope output does: speedscope's
"left heavy" and sandwich views then tell two call sites in one function apart.

The profile is named after the service and the window (UTC), with " (wall-clock)" when
idle stacks are counted, and the notice, when there is one, appended in brackets so the
viewer shows it in its title bar.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Frame, Nanos
from pyrometer.collector.model import Profile

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
EXPORTER = "pyrometer"


def window_label(profile: Profile) -> str:
    """``service 2024-01-01T00:00:00Z .. 2024-01-01T00:01:00Z``; shared with the HTML title."""
    return f"{profile.service or 'profile'} {_utc(profile.start_ns)} .. {_utc(profile.end_ns)}"


def _utc(ns: Nanos) -> str:
    try:
        stamp = datetime.fromtimestamp(ns // NANOS_PER_SECOND, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{ns}ns"  # outside what datetime can show; still say which window
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _frame_json(frame: Frame) -> dict[str, object]:
    out: dict[str, object] = {"name": frame.name}
    if frame.file:
        out["file"] = frame.file
    if frame.line > 0:
        out["line"] = frame.line
    return out


def speedscope_document(profile: Profile, *, notice: str = "") -> dict[str, object]:
    """The speedscope file as a JSON-ready dict."""
    index: dict[Frame, int] = {}
    samples: list[list[int]] = []
    weights: list[int] = []
    for stack, count in profile.samples:
        samples.append([index.setdefault(frame, len(index)) for frame in stack])
        weights.append(count)
    name = window_label(profile)
    if profile.idle_included:
        name += " (wall-clock)"
    if notice:
        name += f" [{notice}]"
    sampled = {
        "type": "sampled",
        "name": name,
        "unit": "none",
        "startValue": 0,
        "endValue": profile.total,
        "samples": samples,
        "weights": weights,
    }
    return {
        "$schema": SCHEMA_URL,
        "exporter": EXPORTER,
        "name": name,
        "activeProfileIndex": 0,
        # dicts keep insertion order, which is index order
        "shared": {"frames": [_frame_json(f) for f in index]},
        "profiles": [sampled],
    }


def render_speedscope(profile: Profile, *, notice: str = "") -> str:
    """Render ``profile`` as a speedscope JSON file."""
    return json.dumps(
        speedscope_document(profile, notice=notice), ensure_ascii=False, separators=(",", ":")
    )
