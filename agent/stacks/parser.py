"""Parse py-spy's ``--format raw`` output into sample counts. Pure: no I/O.

One line per distinct stack: ``frame;frame;...;frame COUNT``, root first. A Python
frame reads ``name (file:line)``; py-spy also writes ``name (file)`` and bare names
(native frames without symbols). Before the Python frames come optional pseudo-frames:
with ``--subprocesses`` one ``process PID:"cmdline"`` per level from the target down to
the sampled worker (the last one is the sampled process), then with ``--threads`` one
``thread (TID): NAME`` (py-spy 0.4) or ``thread (0xHEX)`` (older releases).

The format does not escape ``;``. A file path or a command line that contains one is
split by a naive reader, so this one joins a piece with the next while the piece is
visibly unfinished: a frame with an opened `` (`` that does not end in ``)``, or a
process pseudo-frame whose quoted command line has not ended in ``"``. A ``;`` inside a
bare function or thread name cannot be told apart from a frame boundary, so there the
pieces stay separate frames (Python identifiers cannot contain ``;``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

from pyrometer.agent.shared.model import Frame, SampleKey

_LOCATED = re.compile(r"(?P<name>.*?) \((?P<file>.*):(?P<line>\d+)\)")
_FILE_ONLY = re.compile(r"(?P<name>.*?) \((?P<file>.*)\)")
_PROCESS = re.compile(r'process (?P<pid>\d+):"(?P<cmd>.*)"', re.DOTALL)
_COUNT = re.compile(r"[0-9]+")
_PROCESS_START = re.compile(r'process \d+:"')
# closed process frames, then one whose command line has not ended yet (a quote ends
# it before ";" or, for an empty stack, before the count); a cmdline holding '";'
# closes early (the format has no escaping to tell)
_OPEN_PROCESS = re.compile(
    r'(?:process \d+:"(?:[^"]|"(?!;))*";)*process \d+:"(?:[^"]|"(?!;| [0-9]+\Z))*'
)
_THREAD = re.compile(r"thread \((?P<tid>0[xX][0-9A-Fa-f]+|\d+)\)(?:: (?P<name>.*))?")


def parse_frame(text: str) -> Frame:
    """One frame: ``name (file:line)``, ``name (file)`` or a bare name (file "", line 0)."""
    match = _LOCATED.fullmatch(text)
    if match:
        return Frame(match["name"], match["file"], int(match["line"]))
    match = _FILE_ONLY.fullmatch(text)
    if match:
        return Frame(match["name"], match["file"], 0)
    return Frame(text, "", 0)


def thread_label(tid: str, name: str | None) -> str:
    """The label SampleKey.thread carries: ``"MainThread (2918)"``, or the bare tid."""
    return f"{name} ({tid})" if name else tid


def _unfinished(piece: str) -> bool:
    if piece.startswith("process ") and piece[8:9].isdigit():
        return not _PROCESS.fullmatch(piece)
    if _THREAD.fullmatch(piece):
        return False
    return " (" in piece and not piece.endswith(")")


def _split_frames(stack: str) -> list[str]:
    """Split on ``;``, re-joining pieces of a frame whose file or command line had one."""
    pieces = stack.split(";")
    frames: list[str] = []
    i = 0
    while i < len(pieces):
        j = i
        joined = pieces[i]
        while _unfinished(joined) and j + 1 < len(pieces):
            j += 1
            joined = f"{joined};{pieces[j]}"
        if _unfinished(joined):  # never finished: the split was right after all
            frames.append(pieces[i])
            i += 1
        else:
            frames.append(joined)
            i = j + 1
    return frames


def parse_stack(stack: str, target_pid: int = 0) -> SampleKey:
    """The SampleKey of one raw stack (the line without its count).

    Leading process and thread pseudo-frames become ``pid`` and ``thread``; a pid equal
    to ``target_pid`` becomes 0, which SampleKey reserves for the target itself.
    """
    frames = _split_frames(stack) if stack else []
    pid = 0
    i = 0
    while i < len(frames) and (match := _PROCESS.fullmatch(frames[i])):
        pid = int(match["pid"])
        i += 1
    thread = ""
    if i < len(frames) and (match := _THREAD.fullmatch(frames[i])):
        thread = thread_label(match["tid"], match["name"])
        i += 1
    if pid == target_pid:
        pid = 0
    return SampleKey(tuple(parse_frame(f) for f in frames[i:]), thread, pid)


class RawParser:
    """Turns raw lines into ``(SampleKey, count)`` pairs, counting malformed lines.

    A line without a count after its last space, or with a negative count, is skipped
    and counted in ``malformed``; parsing never raises on input. A line that is only
    `` COUNT`` is a sample with an empty stack: py-spy caught an active thread with no
    Python frame (during startup or shutdown, or in native code).
    """

    def __init__(self, target_pid: int = 0) -> None:
        self.target_pid = target_pid
        self.malformed = 0
        self.first_malformed = ""  # the first skipped record, for a diagnostic

    def parse(self, lines: Iterable[str]) -> Iterator[tuple[SampleKey, int]]:
        """Yield one pair per well-formed line; blank lines are ignored silently.

        A command line with newlines (``python -c "..."``) spreads one record over
        several lines: they are joined while a process pseudo-frame's quote is open.
        """
        pending: list[str] = []
        for raw in lines:
            line = raw.rstrip("\r\n")
            if pending and _PROCESS_START.match(line):  # the open record was cut short
                self._skip("\n".join(pending))
                pending = []
            pending.append(line)
            record = "\n".join(pending)
            if _OPEN_PROCESS.fullmatch(record):
                continue
            pending = []
            if record.strip():
                pair = self._parse_record(record)
                if pair is not None:
                    yield pair
        if pending:
            self._skip("\n".join(pending))

    def _skip(self, record: str) -> None:
        self.malformed += 1
        self.first_malformed = self.first_malformed or record

    def _parse_record(self, record: str) -> tuple[SampleKey, int] | None:
        stack, sep, count_text = record.rpartition(" ")
        if not sep or not _COUNT.fullmatch(count_text):
            self._skip(record)
            return None
        return parse_stack(stack, self.target_pid), int(count_text)

    def parse_text(self, text: str) -> Iterator[tuple[SampleKey, int]]:
        """Like parse(), for a whole file's text (lines end at "\\n" only, as py-spy writes)."""
        return self.parse(text.split("\n"))


def aggregate(pairs: Iterable[tuple[SampleKey, int]]) -> dict[SampleKey, int]:
    """Sum the counts per key (py-spy writes each stack once, but do not rely on it)."""
    counts: Counter[SampleKey] = Counter()
    for key, count in pairs:
        if count:
            counts[key] += count
    return dict(counts)


def format_frame(frame: Frame) -> str:
    """The inverse of parse_frame for the frames py-spy writes."""
    if not frame.file:
        return frame.name
    if frame.line:
        return f"{frame.name} ({frame.file}:{frame.line})"
    return f"{frame.name} ({frame.file})"


def format_line(key: SampleKey, count: int, *, cmdline: str = "python") -> str:
    """One raw line for ``key`` (pseudo-frames included), as py-spy would write it.

    The thread label must be one thread_label() made; ``cmdline`` fills the process
    pseudo-frame, whose command line SampleKey does not keep.
    """
    frames = [format_frame(f) for f in key.stack]
    if key.thread:
        name, _, tid = key.thread.rpartition(" (")
        frames.insert(0, f"thread ({tid[:-1]}): {name}" if name else f"thread ({key.thread})")
    if key.pid:
        frames.insert(0, f'process {key.pid}:"{cmdline}"')
    return f"{';'.join(frames)} {count}"
