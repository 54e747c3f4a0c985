"""What ingest accepts: the bounds on one batch, one stream and one record.

The API checks the same text bounds on what it is sent (events), so a value that could
not have arrived through ingest cannot arrive through the API either.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyrometer.agent.shared.model import NANOS_PER_SECOND, Nanos


@dataclass(frozen=True, slots=True)
class DecodeLimits:
    """What one batch and one stream may hold; past these a batch is RESOURCE_EXHAUSTED."""

    max_stack_depth: int = 512
    max_string_bytes: int = 4096
    max_rows: int = 100_000  # rows of one profile window
    max_delta_entries: int = 100_000  # new strings, frames or stacks in one batch
    max_table_entries: int = 2_000_000  # strings, frames or stacks on one stream
    max_labels: int = 64
    max_count: int = 2**32  # one row's sample count; keeps sums far from int64 overflow
    max_rate_hz: float = 10_000.0
    # agents' clocks drift; an hour ahead is a broken clock, not drift
    max_future_ns: Nanos = 3600 * NANOS_PER_SECOND
    max_window_ns: Nanos = 3600 * NANOS_PER_SECOND
    # telemetry: past max_records of one kind the batch is RESOURCE_EXHAUSTED; past the
    # other bounds one record is dropped (see validate.py)
    max_records: int = 100_000
    max_chunk_gaps: int = 10_000  # gaps listed for one request
    max_payload_bytes: int = 2**40  # a request or response body over 1 TiB is a bug
    max_memory_bytes: int = 2**50  # hosts with terabytes of RAM exist; petabytes do not
    max_latency_ns: Nanos = 86_400 * NANOS_PER_SECOND
    max_cpu_cores: float = 65_536.0
    max_load: float = 1e6
