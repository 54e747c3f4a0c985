"""Folded stacks: the input of Brendan Gregg's flamegraph.pl (and inferno, speedscope).

One line per distinct stack, root first, frames joined by ``;``, then a space and the
sample count::

    handle (app/server.py:42);predict (app/model.py:17);matmul (app/ops.py:8) 130

Frame text is ``name (file:line)`` as py-spy writes it; ``name (file)`` when the line is
unknown (0), and the bare name when the file is unknown too. A sample whose stack is
empty is written as the single frame ``[unknown]``, so the lines always sum to the
profile's total. Lines are sorted by their stack text, so the output is deterministic
and diffable.

Escaping. flamegraph.pl has no escape syntax: it splits the stack on every ``;`` and
reads one stack per line. So frame text is percent-encoded for exactly the characters
that would break that: ``%`` -> ``%25``, ``;`` -> ``%3B``, line feed -> ``%0A``, carriage
return -> ``%0D``. Every other character is kept as is. ``%`` itself is encoded so that
the escape is reversible (see ``unescape_frame`` and ``parse_folded``); flamegraph.pl
shows the encoded text verbatim, which keeps a frame named ``a;b`` readable as
``a%3Bb``. The ``notice`` keyword is accepted for the shared signature and ignored: the
format has no place for comments that every consumer would skip.
"""

from __future__ import annotations

import re
from collections import Counter

from pyrometer.agent.shared.model import Frame, Stack
from pyrometer.collector.model import Profile

EMPTY_STACK_FRAME = "[unknown]"

_ESCAPES = {"%": "%25", ";": "%3B", "\n": "%0A", "\r": "%0D"}
_ESCAPE_RE = re.compile("[%;\n\r]")
_UNESCAPE_RE = re.compile("%(25|3B|0A|0D)")
_UNESCAPES = {code[1:]: char for char, code in _ESCAPES.items()}
# The count is the last run of digits after the last whitespace, as flamegraph.pl reads it.
_LINE_RE = re.compile(r"^(.*)\s+(\d+)$")


def escape_frame(text: str) -> str:
    """Make ``text`` safe as one ``;``-separated field of one folded line."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group()], text)


def unescape_frame(text: str) -> str:
    """Inverse of ``escape_frame``."""
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES[m.group(1)], text)


def frame_text(frame: Frame) -> str:
    """py-spy's rendering of a frame, before escaping."""
    if not frame.file:
        return frame.name
    if frame.line <= 0:
        return f"{frame.name} ({frame.file})"
    return f"{frame.name} ({frame.file}:{frame.line})"


def stack_text(stack: Stack) -> str:
    """The ``;``-joined, escaped frames of one line (without its count)."""
    if not stack:
        return EMPTY_STACK_FRAME
    return ";".join(escape_frame(frame_text(f)) for f in stack)


def render_folded(profile: Profile, *, notice: str = "") -> str:
    """Render ``profile`` as folded stacks, one ``stack count`` line per distinct stack."""
    del notice  # see the module docstring
    counts: Counter[str] = Counter()
    # Distinct stacks can fold to the same text (a frame named "f (x.py:1)" with no
    # file); summing them keeps one line per stack text, as consumers expect.
    for stack, count in profile.samples:
        counts[stack_text(stack)] += count
    return "".join(f"{text} {counts[text]}\n" for text in sorted(counts))


def parse_folded(text: str) -> list[tuple[tuple[str, ...], int]]:
    """Read folded lines back into (unescaped frame texts, count) pairs.

    Used to check round trips; blank lines are skipped and a malformed line raises
    ValueError naming its line number.
    """
    out: list[tuple[tuple[str, ...], int]] = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        match = _LINE_RE.match(line)
        if match is None:
            raise ValueError(f"folded line {number} has no trailing count: {line!r}")
        frames = tuple(unescape_frame(f) for f in match.group(1).split(";"))
        out.append((frames, int(match.group(2))))
    return out
