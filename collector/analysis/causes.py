"""Score every candidate cause of a spike against its baseline, and rank them.

Each scorer is a pure function of the spike's context and the facts shared across
scorers (candidate.py). A score below MIN_SCORE does not explain the spike; when none
reaches it, the spike is "unexplained" and `checked` says what each candidate saw.
When several candidates each explain part of the rise and say how much, they are
ordered among themselves by that share (`by_share`). Latency itself is never a cause:
every scorer reads a signal other than latency, and uses latency only to ask how much
of the rise that signal accounts for.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from pyrometer.collector.analysis.candidate import SHARE, Cause, Scorer, facts
from pyrometer.collector.analysis.evidence import SpikeContext
from pyrometer.collector.analysis.scorers_change import score_code_path
from pyrometer.collector.analysis.scorers_deploy import check_change, score_deploy
from pyrometer.collector.analysis.scorers_engine import (
    score_batch_saturation,
    score_engine_queueing,
    score_kv_cache,
    score_prompt_tokens,
)
from pyrometer.collector.analysis.scorers_load import score_payload, score_traffic
from pyrometer.collector.analysis.scorers_system import score_gpu, score_host

MIN_SCORE = 0.2
# the engine's scorers last: they read the engine's metrics (agent --scrape) and never
# score without them
SCORERS: tuple[Scorer, ...] = (score_gpu, score_deploy, score_payload, score_traffic,
                               score_code_path, score_host, score_engine_queueing,
                               score_batch_saturation, score_kv_cache, score_prompt_tokens)
# A candidate that is another's account of the same thing seen less directly: requests
# waiting in the engine's queue are what a full KV cache or a batch at its limit look like
# from the door (admission waits for room), and larger payloads at an engine that counts
# prompt tokens are the token shift measured in bytes. When the more direct candidate
# explains the spike (MIN_SCORE), the other keeps its evidence but ranks just below it:
# the one to act on is the constraint, or the engine's own count.
EXPLAINED_BY: dict[str, tuple[str, ...]] = {
    "engine_queueing": ("kv_cache_pressure", "batch_saturation"),
    "payload_size": ("prompt_tokens_shift",),
}
BELOW = 0.95  # the explained candidate's score is capped at this share of the direct one's


@dataclass(frozen=True, slots=True)
class Ranking:
    """Candidates that scored, best first; all of them with what they saw."""

    causes: tuple[Cause, ...]
    checked: tuple[Cause, ...]  # every candidate, in SCORERS order

    @property
    def unexplained(self) -> bool:
        return not self.causes or self.causes[0].score < MIN_SCORE


def rank(ctx: SpikeContext) -> Ranking:
    """Every candidate scored; those above zero sorted by score (ties: by z)."""
    shared = check_change(ctx, facts(ctx))
    return order(tuple(_clamped(scorer(ctx, shared)) for scorer in SCORERS))


def order(verdicts: tuple[Cause, ...]) -> Ranking:
    """The scorers' verdicts ranked: each below the more direct account that explains it
    (EXPLAINED_BY), by score (ties: by z), then those that split the rise by their share."""
    verdicts, capped = _below_what_explains_them(verdicts)
    scored = sorted((c for c in verdicts if c.score > 0), key=lambda c: (-c.score, -c.z, c.kind))
    return Ranking(tuple(by_share(scored, pinned=capped)), verdicts)


def _below_what_explains_them(verdicts: tuple[Cause, ...]) -> tuple[tuple[Cause, ...], frozenset[str]]:
    """See EXPLAINED_BY; also the kinds it capped, which must stay below what explains them."""
    by_kind = {c.kind: c for c in verdicts}
    out = []
    capped = set()
    for cause in verdicts:
        direct = max((by_kind[k] for k in EXPLAINED_BY.get(cause.kind, ()) if k in by_kind
                      and by_kind[k].score >= MIN_SCORE), key=lambda c: c.score, default=None)
        if direct is not None and cause.score > BELOW * direct.score:
            cause = replace(cause, score=BELOW * direct.score,
                            explanation=f"{cause.explanation} (follows from {direct.kind})")
            capped.add(cause.kind)
        out.append(cause)
    return tuple(out), frozenset(capped)


def _share(cause: Cause) -> float | None:
    value = cause.evidence.get(SHARE)
    return float(value) if isinstance(value, (int, float)) and cause.score >= MIN_SCORE \
        else None


def by_share(causes: list[Cause], pinned: Collection[str] = ()) -> list[Cause]:
    """Causes that each explain part of the rise (larger inputs during a surge), ordered
    among themselves by how much of it each explains.

    Scores say how sure a scorer is; when two sure candidates split the rise, the one
    that accounts for more of it is the one to act on first. Only causes that name
    their share (evidence `share_of_rise`) and explain the spike (MIN_SCORE) move, and
    only into each other's places; the rest keep their rank by score. `pinned` kinds keep
    theirs too: a candidate capped below the more direct account of the same thing
    (EXPLAINED_BY) must not move above it by its share.
    """
    places = [i for i, c in enumerate(causes) if _share(c) is not None and c.kind not in pinned]
    if len(places) < 2:
        return causes
    moved = sorted((causes[i] for i in places), key=lambda c: -(_share(c) or 0.0))
    out = list(causes)
    for i, cause in zip(places, moved, strict=True):
        out[i] = cause
    return out


def _clamped(cause: Cause) -> Cause:
    # a scorer's arithmetic may leave [0, 1] by a rounding error; the contract may not
    score = min(1.0, max(0.0, cause.score))
    if score == cause.score:
        return cause
    return Cause(cause.kind, score, cause.z, cause.explanation, cause.evidence, cause.note)
