"""The shipper's queue: batches in submission order until acknowledged, in memory or spooled.

Every batch waits here, oldest first, until the collector acknowledges it. Its content
stays in memory while the collector keeps up, so the happy path never touches the
disk. It moves to the spool (see spool.py) when the collector is unreachable (then at
once, so that an agent killed during an outage loses nothing) or behind (more than
``memory_batches`` waiting). A batch on the wire stays where it is until its ack.

Bounds, each dropping the oldest batch not on the wire and counting it: the spool's
bytes (``spool_max_bytes``), and the batches held in memory (``max_pending``: the only
bound when there is no spool, or when writing to it fails).

The spool of an agent that was killed is loaded first, ahead of anything new, and is
delivered under its own agent id and sequence numbers.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pyrometer.agent.shared.model import ProfileWindow, Telemetry
from pyrometer.agent.ship.spool import Spool, SpoolKey

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Content:
    """One batch's content before encoding: what the agent gathered."""

    window: ProfileWindow | None
    telemetry: Telemetry | None
    version: str | None


@dataclass(slots=True)
class Entry:
    """One queued batch. Mutable on purpose: its content moves from memory to disk."""

    seq: int
    content: Content | None  # None once spooled
    key: SpoolKey | None = None  # set once on disk


@dataclass(slots=True)
class ShipperStats:
    """Counters since the agent started (sent/acked count spooled batches too)."""

    sent: int = 0
    acked: int = 0
    duplicates: int = 0
    dropped_overflow: int = 0  # past max_pending in memory
    dropped_spool: int = 0  # past spool_max_bytes on disk
    dropped_corrupt: int = 0  # spooled files that could not be read back
    rejected: int = 0  # the collector refused them (INVALID_ARGUMENT, ...)
    spooled: int = 0  # batches written to disk
    reconnects: int = 0

    @property
    def dropped(self) -> int:
        return self.dropped_overflow + self.dropped_spool + self.dropped_corrupt + self.rejected


Encode = Callable[[int, Content], bytes]  # (seq, content) -> standalone batch


class Outbox:
    """Ordered pending batches; the first ``in_flight`` of them are on the wire."""

    def __init__(self, stats: ShipperStats, encode: Encode, spool: Spool | None = None, *,
                 max_pending: int = 720, memory_batches: int = 16,
                 spool_max_bytes: int = 64 * 1024 * 1024, agent_id: str = "agent") -> None:
        self.stats = stats
        self.in_flight = 0
        self.connected = True  # optimistic until a stream fails
        self._encode = encode
        self._spool = spool
        self._max_pending = max_pending
        self._memory_batches = memory_batches
        self._spool_max_bytes = spool_max_bytes
        self._run_ns = time.time_ns()
        self._agent_id = agent_id
        self._spool_failing = False
        self._entries: deque[Entry] = deque(
            Entry(key.seq, None, key) for key in (spool.keys() if spool else []))
        self._enforce_bounds()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def on_disk(self) -> tuple[int, int]:
        """(batches, bytes) in the spool."""
        if self._spool is None:
            return 0, 0
        return sum(e.key is not None for e in self._entries), self._spool.size_bytes

    def add(self, seq: int, content: Content) -> None:
        self._entries.append(Entry(seq, content))
        self.spill(self._memory_batches if self.connected else 0)
        self._enforce_bounds()

    def next_unsent(self) -> tuple[Entry, Content | bytes] | None:
        """The oldest batch not yet on the wire, now counted in flight, with its content.

        A spooled batch that cannot be read back is dropped, counted and skipped.
        """
        while self.in_flight < len(self._entries):
            entry = self._entries[self.in_flight]
            body: Content | bytes | None = entry.content
            if body is None and entry.key is not None and self._spool is not None:
                body = self._spool.read(entry.key)
            if body is None:
                del self._entries[self.in_flight]
                self.stats.dropped_corrupt += 1
                continue
            self.in_flight += 1
            return entry, body
        return None

    def discard_sent(self, entry: Entry) -> None:
        """Drop the batch next_unsent just returned: its spooled bytes did not decode."""
        assert self._entries[self.in_flight - 1] is entry
        del self._entries[self.in_flight - 1]
        self.in_flight -= 1
        self.stats.dropped_corrupt += 1
        self._remove_file(entry)

    def ack(self, seq: int) -> None:
        """The collector committed the oldest batch on the wire (acks come in order)."""
        if not self.in_flight:
            log.warning("ack for seq %d with nothing on the wire; ignored", seq)
            return
        entry = self._entries.popleft()
        self.in_flight -= 1
        if entry.seq != seq:
            log.warning("ack for seq %d, expected %d", seq, entry.seq)
        self._remove_file(entry)

    def reject_head(self) -> Entry | None:
        """Drop the oldest batch on the wire: the collector refused it for good."""
        if not self.in_flight:
            return None
        entry = self._entries.popleft()
        self.in_flight -= 1
        self._remove_file(entry)
        return entry

    def spill(self, keep_in_memory: int) -> None:
        """Move the oldest batches not on the wire to disk, keeping the newest few in memory."""
        if self._spool is None:
            return
        waiting = [e for e in list(self._entries)[self.in_flight:] if e.content is not None]
        for entry in waiting[:max(0, len(waiting) - keep_in_memory)]:
            if not self._write(entry):
                return

    def persist(self) -> None:
        """The agent is exiting: everything still in memory goes to disk, on the wire or not."""
        self.in_flight = 0
        self.spill(0)
        self._enforce_bounds()
        if self._entries:
            batches, size = self.on_disk
            log.warning("%d batches not delivered; %d (%d bytes) kept in the spool for the "
                        "next agent", len(self._entries), batches, size)

    def _write(self, entry: Entry) -> bool:
        assert self._spool is not None and entry.content is not None
        key = SpoolKey(self._run_ns, entry.seq, self._agent_id)
        try:
            self._spool.write(key, self._encode(entry.seq, entry.content))
        except OSError as exc:
            if not self._spool_failing:
                log.error("spool: cannot write to %s (%s); holding batches in memory",
                          self._spool.directory, exc)
            self._spool_failing = True
            return False
        if self._spool_failing:
            log.info("spool: writing to %s again", self._spool.directory)
        self._spool_failing = False
        entry.content, entry.key = None, key
        self.stats.spooled += 1
        return True

    def _enforce_bounds(self) -> None:
        while self._spool is not None and self._spool.size_bytes > self._spool_max_bytes:
            if not self._drop_oldest(lambda e: e.key is not None):
                break
            self.stats.dropped_spool += 1
            self._log_drop(self.stats.dropped_spool, f"spool over {self._spool_max_bytes} bytes")
        while sum(e.content is not None for e in self._entries) > self._max_pending:
            if not self._drop_oldest(lambda e: e.content is not None):
                break
            self.stats.dropped_overflow += 1
            self._log_drop(self.stats.dropped_overflow, f"over {self._max_pending} in memory")

    def _drop_oldest(self, where: Callable[[Entry], bool]) -> bool:
        for index in range(self.in_flight, len(self._entries)):
            entry = self._entries[index]
            if where(entry):
                del self._entries[index]
                self._remove_file(entry)
                return True
        return False

    @staticmethod
    def _log_drop(count: int, why: str) -> None:
        # a long outage drops one batch per window: say so, but not every time
        if count == 1 or count % 100 == 0:
            log.warning("collector behind: dropped the oldest batch (%s), %d so far", why, count)

    def _remove_file(self, entry: Entry) -> None:
        if entry.key is not None and self._spool is not None:
            self._spool.remove(entry.key)
