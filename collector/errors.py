"""The collector's exceptions: one root, so callers can catch the whole component.

Each class carries its exit code (see agent/shared/errors.py): a runtime failure by default.
"""

from __future__ import annotations

from pyrometer.agent.shared.errors import EXIT_USAGE, PyrometerError


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

    exit_code = EXIT_USAGE  # point --db at another file, or stop the other process


class ListenError(CollectorError):
    """An address the collector was told to listen on cannot be bound (in use, not local)."""

    exit_code = EXIT_USAGE


class ShuttingDownError(CollectorError):
    """The collector is stopping and accepts no more batches; agents retry later."""
