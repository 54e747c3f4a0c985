"""Scoring: detections against ground truth, and the cause rankings against the fault.

Pure functions over the run records harness.run_one returns. Per scenario, never only
pooled:

- a spike *matches* a fault when [start, end] overlaps [fault start, fault end + slack];
- precision: matching spikes / all spikes of the scenario's fault runs;
- recall: faults with at least one matching spike / faults;
- delay: onset (or start, if the spike has no onset) of the first matching spike minus
  the fault's start, in seconds;
- false spikes per hour: spikes matching no fault, per hour of analysable time outside
  the fault windows (the first trailing-baseline of each run cannot be analysed, so it
  is not counted);
- AC@k: the share of *detected* faults whose true cause is among the first k causes of
  the ranked spike (the matching spike that overlaps the fault window most). Misses are
  in recall, not here, so that the random baseline's AC@1 is 1/6 by construction (1/10 in
  the LLM scenarios, where the engine's four kinds can score too). Where
  a fault has two true causes (overlapping faults), AC@1 asks that the first cause be
  one of them and AC@3 that both be among the first three.

Baselines rank the same spike: "random" is a seeded uniformly random permutation of the
kinds that can score in the scenario (plan.kinds_for: the six of KINDS, averaged over many
draws AC@1 tends to 1/6 and AC@3 to 1/2; in the LLM scenarios the engine's four as well,
1/10 and 3/10); "max z" re-sorts the spike's causes by their robust z alone (kinds it does
not list count as z = 0, in the fixed order of those kinds).

Each proportion (recall, precision, AC@1, AC@3) comes with its 95% Wilson score interval
over the counts behind it, so that 3 of 3 reads as "somewhere in [0.44, 1]", not as
certainty. Wilson rather than the normal approximation: it stays inside [0, 1] and is
not degenerate at 0/n and n/n, which is where a handful of runs usually lands.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from scenarios.plan import KINDS, kinds_for

RANDOM_DRAWS = 2000
RANKERS = ("pyrometer", "random", "max_z")
NS = 1_000_000_000
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a binomial proportion (95% by default); None
    without trials. 3/3 gives [0.439, 1.0], 0/3 [0.0, 0.561], 5/10 [0.237, 0.763]."""
    if trials <= 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"{successes} successes out of {trials} trials")
    p, z2 = successes / trials, z * z
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = z / (1 + z2 / trials) * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # clamp rounding dust: at 0/n and n/n the bound is exactly 0 or 1
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return low, high


def spikes_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    body = record.get("spikes")
    return list(body.get("spikes", [])) if isinstance(body, dict) else []


def overlap_s(spike: dict[str, Any], start: float, end: float) -> float:
    """Seconds of [spike start, spike end] inside [start, end] (unix seconds); < 0 if apart."""
    return min(spike["end_ns"] / NS, end) - max(spike["start_ns"] / NS, start)


def matching(record: dict[str, Any], slack_s: float) -> list[dict[str, Any]]:
    truth = record.get("truth")
    if not truth:
        return []
    return [s for s in spikes_of(record) if overlap_s(s, truth["start"], truth["end"] + slack_s) >= 0]


def rank_pyrometer(spike: dict[str, Any]) -> list[str]:
    causes = sorted(spike.get("causes", []), key=lambda c: -float(c.get("score") or 0))
    return [str(c["kind"]) for c in causes]


def rank_max_z(spike: dict[str, Any], kinds: Sequence[str] = KINDS) -> list[str]:
    z = {str(c["kind"]): float(c.get("z") or 0.0) for c in spike.get("causes", [])}
    order = list(z) + [k for k in kinds if k not in z]  # listed first, then the rest
    return sorted(order, key=lambda k: -z.get(k, 0.0))  # stable: ties keep that order


def hit(order: Sequence[str], causes: Sequence[str], k: int) -> bool:
    """AC@k's test: at k = 1 the first cause is a true one; past 1, every true cause is
    among the first k (for one true cause both read "among the first k")."""
    return bool(order) and order[0] in causes if k == 1 else set(causes) <= set(order[:k])


def truth_causes(truth: dict[str, Any]) -> list[str]:
    return list(truth.get("kinds") or [truth["kind"]])


def random_ac(expected: str | Sequence[str], k: int, rng: random.Random,
              kinds: Sequence[str] = KINDS) -> float:
    """Expected AC@k of a uniformly random ranking of `kinds`, from seeded draws."""
    causes = [expected] if isinstance(expected, str) else list(expected)
    hits = 0
    for _ in range(RANDOM_DRAWS):
        order = list(kinds)
        rng.shuffle(order)
        hits += hit(order, causes, k)
    return hits / RANDOM_DRAWS


def _analysable_s(record: dict[str, Any], baseline_s: float, slack_s: float) -> float:
    window, truth = record["window"], record.get("truth")
    total = max(0.0, window["to"] - window["from"] - baseline_s)
    if truth:
        total -= max(0.0, min(window["to"], truth["end"] + slack_s) - max(window["from"] + baseline_s,
                                                                         truth["start"]))
    return max(0.0, total)


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def score_scenario(records: Iterable[dict[str, Any]], baseline_s: float, slack_s: float,
                   seed: int = 0) -> dict[str, Any]:
    """The figures for one scenario's runs (records that failed are counted, not scored)."""
    rng = random.Random(seed)
    ok = [r for r in records if "error" not in r]
    runs = list(records)
    faults = [r for r in ok if r.get("truth")]
    all_spikes = matched_spikes = false_spikes = detected = 0
    delays: list[float] = []
    ac: dict[str, list[float]] = {f"ac{k}_{who}": [] for who in RANKERS for k in (1, 3)}
    hours = 0.0
    named = on_one = 0  # faults on one instance of several: matched spikes that name it
    for record in ok:
        spikes, hits = spikes_of(record), matching(record, slack_s)
        all_spikes += len(spikes) if record.get("truth") else 0
        matched_spikes += len(hits)
        false_spikes += len(spikes) - len(hits)
        hours += _analysable_s(record, baseline_s, slack_s) / 3600
        if not hits:
            continue
        truth = record["truth"]
        detected += 1
        first = min(hits, key=lambda s: s.get("onset_ns") or s["start_ns"])
        delays.append((first.get("onset_ns") or first["start_ns"]) / NS - truth["start"])
        best = max(hits, key=lambda s: overlap_s(s, truth["start"], truth["end"] + slack_s))
        causes = truth_causes(truth)
        kinds = kinds_for(record["plan"]["scenario"])
        if truth.get("instance"):
            on_one += 1
            named += best.get("instance") == truth["instance"]
        for k in (1, 3):
            ac[f"ac{k}_pyrometer"].append(float(hit(rank_pyrometer(best), causes, k)))
            ac[f"ac{k}_max_z"].append(float(hit(rank_max_z(best, kinds), causes, k)))
            ac[f"ac{k}_random"].append(random_ac(causes, k, rng, kinds))
    hits1, hits3 = (round(sum(ac[f"ac{k}_pyrometer"])) for k in (1, 3))
    return {
        "runs": len(runs), "failed_runs": len(runs) - len(ok), "faults": len(faults),
        "detected": detected,
        "recall": detected / len(faults) if faults else None,
        "recall_ci": wilson(detected, len(faults)),
        "precision": matched_spikes / all_spikes if all_spikes else None,
        "precision_ci": wilson(matched_spikes, all_spikes),
        "ac1_pyrometer_ci": wilson(hits1, detected),
        "ac3_pyrometer_ci": wilson(hits3, detected),
        "spikes": sum(len(spikes_of(r)) for r in ok), "false_spikes": false_spikes,
        "false_per_hour": false_spikes / hours if hours > 0 else None,
        "analysable_hours": hours, "analysable_min": hours * 60,
        "delay_median_s": statistics.median(delays) if delays else None,
        "delay_max_s": max(delays) if delays else None,
        "instance_named": named if on_one else None, "instance_faults": on_one or None,
        **{key: _mean(values) for key, values in ac.items()},
    }


def row_key(scenario: str, seed_set: str) -> str:
    """A row's key in the scores: the scenario, marked when its runs are held out."""
    return scenario if seed_set == "in-sample" else f"{scenario} ({seed_set})"


def score(records: Sequence[dict[str, Any]], baseline_s: float, slack_s: float,
          seed: int = 0) -> dict[str, dict[str, Any]]:
    """score_scenario for each scenario and seed set, in the order the records first name
    them; in-sample and held-out runs are never pooled (see plan.py)."""
    def group(record: dict[str, Any]) -> tuple[str, str]:
        return record["plan"]["scenario"], record["plan"].get("seed_set", "in-sample")

    groups = list(dict.fromkeys(group(r) for r in records))
    return {row_key(name, seed_set): {
                "scenario": name, "seed_set": seed_set,
                **score_scenario([r for r in records if group(r) == (name, seed_set)],
                                 baseline_s, slack_s, seed)}
            for name, seed_set in groups}
