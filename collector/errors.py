"""The collector's exceptions: one root, so callers can catch the whole component."""

from __future__ import annotations

from pyrometer.agent.shared.errors import PyrometerError


class CollectorError(PyrometerError):
    """Root of every error the collector raises on purpose."""


class InvalidBatchError(CollectorError):
    """A batch breaks the ingest protocol; it is rejected and nothing changes.

    The ingest servicer answers it with INVALID_ARGUMENT.
    """


class BatchLimitError(InvalidBatchError):
    """A batch exceeds a size limit (rows, stack depth, string length, table size).

    The ingest servicer answers it with RESOURCE_EXHAUSTED.
    """


class StorageError(CollectorError):
    """The store failed to read or write; the ingest servicer answers INTERNAL."""


class DatabaseInUseError(StorageError):
    """The database file is locked by another process (DuckDB allows one writer)."""


class ShuttingDownError(CollectorError):
    """The collector is stopping and accepts no more batches; agents retry later."""
