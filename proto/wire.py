"""The ingest protocol's rules that field types cannot say (see ingest.proto): how a
prefix-coded stack and a window's row columns read. The collector's decoder and the
agent's spool re-encoder both read batches, so both read them here; each turns a
`WireFormatError` into its own error (a rejected batch, an unusable spooled one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import TypeVar

from pyrometer.proto import ingest_pb2

T = TypeVar("T")


class WireFormatError(ValueError):
    """A batch breaks a rule of the protocol; the message says which."""


def stack_prefix(stack: ingest_pb2.Stack, own: int,
                 frames_of: Callable[[int], Sequence[T]]) -> tuple[T, ...]:
    """The frames stack `own` (its stream id) takes from its base: the first `keep`
    frames of the stack `back` ids earlier, whose frames `frames_of` returns."""
    back, keep = stack.back, stack.keep
    if keep == 0:
        if back:
            raise WireFormatError(f"stack {own} has back {back} but keeps no frames")
        return ()
    if not 1 <= back <= own:
        raise WireFormatError(
            f"stack {own} has back {back}: its base must be an earlier stack on this "
            f"stream (back in [1, {own}])")
    base = own - back
    frames = frames_of(base)
    if keep > len(frames):
        raise WireFormatError(
            f"stack {own} keeps {keep} frames of stack {base}, which has {len(frames)}")
    return tuple(frames[:keep])


def window_row_count(window: ingest_pb2.ProfileWindow) -> int:
    """Rows in the window, from whichever stack id column it uses (never both)."""
    if window.stack_id_deltas and window.stack_ids:
        raise WireFormatError("window has both stack_ids and stack_id_deltas")
    return len(window.stack_ids) or len(window.stack_id_deltas)


def window_stack_ids(window: ingest_pb2.ProfileWindow) -> list[int]:
    """Each row's stream stack id, from stack_ids or from stack_id_deltas."""
    window_row_count(window)
    return list(window.stack_ids) or list(accumulate(window.stack_id_deltas))
