"""Values passed from ingest to storage: a decoded batch as columnar rows.

Kept apart from the decoder so that a store depends on these plain values only, never
on protobuf. Frame and stack ids here are content hashes (see decode.frame_id).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar, overload

from pyrometer.agent.shared.model import Nanos, Telemetry

Rejections = Mapping[tuple[str, str], int]
"""Records dropped from a batch: (kind, reason) -> count; kind is gpu, process, host,
request, event or agent_stats, and reason a snake_case token such as negative_latency."""


@dataclass(frozen=True, slots=True)
class Source:
    """Who sent a batch: the agent's identity, with `version` split out of the labels."""

    agent_id: str
    service: str
    instance: str = ""
    host: str = ""
    target_pid: int = 0
    version: str = ""
    labels: tuple[tuple[str, str], ...] = ()  # sorted by key, without "version"
    agent_version: str = ""

    def labels_json(self) -> str:
        """The labels as a JSON object with sorted keys (stable text for storage)."""
        return _labels_json(self.labels)


@functools.lru_cache(maxsize=4096)
def _labels_json(labels: tuple[tuple[str, str], ...]) -> str:
    # a fleet sends a few label sets over and over, and a commit asks for each batch's
    # up to three times (its source's number, its sample rows): 1.8 us a json.dumps of
    # two labels, 0.06 us a cache hit
    return json.dumps(dict(labels), sort_keys=True, separators=(",", ":"))


_FrameColumns = tuple[tuple[int, ...], tuple[str, ...], tuple[str, ...], tuple[int, ...]]


class FrameRows:
    """Frames as columns; `ids[i]` is the content hash of (names[i], files[i], lines[i]).

    `later` makes them on first use: every batch carries the frames of every stack it
    uses, but a store reads them only for a batch with a stack it does not have yet
    (frames_table), which in the steady state is none; gathering them for each batch
    was a tenth of the saturated collector's time.
    """

    __slots__ = ("_columns", "_make")

    def __init__(self, ids: Sequence[int], names: Sequence[str], files: Sequence[str],
                 lines: Sequence[int]) -> None:
        columns = (tuple(ids), tuple(names), tuple(files), tuple(lines))
        if len({len(c) for c in columns}) > 1:
            raise ValueError(f"frame columns of different lengths: {[len(c) for c in columns]}")
        self._columns: _FrameColumns | None = columns
        self._make: Callable[[], FrameRows] | None = None

    @classmethod
    def later(cls, make: Callable[[], FrameRows]) -> FrameRows:
        """Frames that `make` gathers the first time they are read (once)."""
        rows = cls.__new__(cls)
        rows._columns, rows._make = None, make
        return rows

    @classmethod
    def empty(cls) -> FrameRows:
        return cls((), (), (), ())

    def _get(self) -> _FrameColumns:
        if self._columns is None:
            assert self._make is not None
            self._columns, self._make = self._make()._get(), None
        return self._columns

    @property
    def ids(self) -> tuple[int, ...]:
        return self._get()[0]

    @property
    def names(self) -> tuple[str, ...]:
        return self._get()[1]

    @property
    def files(self) -> tuple[str, ...]:
        return self._get()[2]

    @property
    def lines(self) -> tuple[int, ...]:
        return self._get()[3]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrameRows):
            return NotImplemented
        return self._get() == other._get()

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return f"FrameRows({len(self.ids)} frames)"


@dataclass(frozen=True, slots=True)
class StackRows:
    """Stacks as columns; `frame_ids[i]` are frame content hashes, root first."""

    ids: tuple[int, ...]
    frame_ids: tuple[tuple[int, ...], ...]

    @classmethod
    def empty(cls) -> StackRows:
        return cls((), ())


@dataclass(frozen=True, slots=True)
class WindowRows:
    """One profile window; the i-th entry of each tuple column is one sample row."""

    start_ns: Nanos
    end_ns: Nanos
    rate_hz: float
    idle_included: bool
    gil_only: bool
    native: bool
    errors: int
    stack_ids: tuple[int, ...]
    threads: tuple[str, ...]
    pids: tuple[int, ...]  # the sampled process; a row's 0 is resolved to target_pid
    counts: tuple[int, ...]


T = TypeVar("T")
_FIELD_NAMES: dict[type[Any], tuple[str, ...]] = {}


def _field_names(record_type: type[Any]) -> tuple[str, ...]:
    # a dataclass's field names in order, looked up once per type
    names = _FIELD_NAMES.get(record_type)
    if names is None:
        names = _FIELD_NAMES[record_type] = tuple(f.name for f in fields(record_type))
    return names


class Columns(Sequence[T]):
    """Records of one dataclass type held as columns, one tuple per field: the i-th entry
    of each is one record.

    The decoder gives a batch's requests and 1 Hz readings this way, because a busy
    model server sends thousands of requests a batch and every step after the decoder
    wants columns (the Arrow tables, the route metrics, the late-request checks):
    building a frozen record each and taking it apart again cost more than the rest of
    storing it. It is still a sequence of records, built on demand, for the code that
    wants one at a time, and it equals a tuple of the same records.
    """

    __slots__ = ("type", "_columns")

    def __init__(self, record_type: type[T], columns: Mapping[str, Sequence[Any]]) -> None:
        names = _field_names(record_type)
        if columns.keys() != set(names):
            raise ValueError(f"columns {sorted(columns)} are not the fields of "
                             f"{record_type.__name__}: {sorted(names)}")
        lengths = {len(values) for values in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"{record_type.__name__} columns of different lengths: {sorted(lengths)}")
        self.type = record_type
        # in the record's field order, so that a row is its positional arguments
        self._columns = {name: tuple(columns[name]) for name in names}

    @classmethod
    def of(cls, record_type: type[T], records: Sequence[T]) -> Columns[T]:
        """`records` as columns (themselves when they already are)."""
        if isinstance(records, Columns) and records.type is record_type:
            return records
        return cls(record_type, {name: [getattr(r, name) for r in records]
                                 for name in _field_names(record_type)})

    @classmethod
    def of_fields(cls, record_type: type[T], values: Sequence[tuple[Any, ...]]) -> Columns[T]:
        """Columns from one tuple per field in the record type's field order: what a
        decode worker's handoff carries (ingest/handoff.py). Checked for the count and
        the lengths only, which costs a fifth of building them by name."""
        names = _field_names(record_type)
        if len(values) != len(names) or len(set(map(len, values))) > 1:
            raise ValueError(f"{len(values)} columns of lengths {sorted(set(map(len, values)))} "
                             f"are not the {len(names)} fields of {record_type.__name__}")
        columns: Columns[T] = cls.__new__(cls)
        columns.type = record_type
        columns._columns = dict(zip(names, map(tuple, values), strict=True))  # a tuple stays itself
        return columns

    def as_fields(self) -> tuple[tuple[Any, ...], ...]:
        """One tuple per field in the record type's field order (`of_fields`' input)."""
        return tuple(self._columns.values())

    def column(self, name: str) -> tuple[Any, ...]:
        """One field's values, a record's each."""
        return self._columns[name]

    def __len__(self) -> int:
        return len(next(iter(self._columns.values()), ()))

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[T, ...]: ...
    def __getitem__(self, index: int | slice) -> T | tuple[T, ...]:
        if isinstance(index, slice):
            return tuple(self[i] for i in range(*index.indices(len(self))))
        return self.type(*(values[index] for values in self._columns.values()))

    def __iter__(self) -> Iterator[T]:
        return (self.type(*row) for row in zip(*self._columns.values(), strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Columns({self.type.__name__}, {len(self)} records)"


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """A validated batch, ready to store.

    `frames` and `stacks` hold every frame and stack the window refers to (not only
    those new on the stream), so a batch stored on its own is always complete; a store
    skips the ids it already has. `telemetry` holds the records that passed validation;
    the others are only counted in `rejected`.
    """

    source: Source
    seq: int
    frames: FrameRows
    stacks: StackRows
    window: WindowRows | None
    # valid telemetry records; route, method and source of requests already resolved;
    # requests and readings as Columns where the decoder made them (a hand-made batch
    # may hold tuples of records: readers take Columns.of(RecordType, records))
    telemetry: Telemetry = field(default_factory=Telemetry)
    rejected: Rejections = field(default_factory=dict)  # dropped records, counted

    @property
    def sample_count(self) -> int:
        """Samples (the sum of counts) this batch carries."""
        return sum(self.window.counts) if self.window else 0

    @property
    def row_count(self) -> int:
        """Sample rows this batch carries."""
        return len(self.window.counts) if self.window else 0
