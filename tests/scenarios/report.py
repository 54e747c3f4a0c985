"""The evaluation's outputs: a Markdown table (one row per scenario) and a JSON document."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scenarios import cotenant, gpu_sim
from scenarios.plan import DECOY_LEADS_S, DESCRIPTIONS

REPO = Path(__file__).resolve().parents[2]

COLUMNS = (
    ("runs", "runs"), ("recall", "recall"), ("precision", "precision"),
    ("delay_median_s", "delay p50 (s)"), ("delay_max_s", "delay max (s)"),
    ("false_per_hour", "false spikes/h"), ("analysable_min", "analysed min"),
    ("ac1_pyrometer", "AC@1"), ("ac3_pyrometer", "AC@3"),
    ("ac1_random", "AC@1 random"), ("ac3_random", "AC@3 random"),
    ("ac1_max_z", "AC@1 max-z"), ("ac3_max_z", "AC@3 max-z"),
)  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _with_interval(row: dict[str, Any], key: str) -> str:
    """A proportion and, where the row has one, its 95% interval: "1.00 [0.44, 1.00]"."""
    cell, interval = _cell(row.get(key)), row.get(f"{key}_ci")
    if row.get(key) is None or not interval:
        return cell
    low, high = interval
    return f"{cell} [{low:.2f}, {high:.2f}]"


def _name(scenario: str) -> str:
    return f"{scenario} (simulated GPU)" if scenario == "gpu_throttling" else scenario


def table(scores: dict[str, dict[str, Any]]) -> str:
    """Per-scenario rows; a failed run is shown in its row, never folded into a pool."""
    head = ["scenario", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, row in scores.items():
        name = str(row.get("scenario", key))
        cells = [_with_interval(row, key) for key, _ in COLUMNS]
        if row.get("failed_runs"):
            cells[0] = f"{row['runs']} ({row['failed_runs']} failed)"
        lines.append("| " + " | ".join([_name(name), *cells]) + " |")
    return "\n".join(lines) + "\n"


SET_TITLES = {
    "in-sample": "In-sample (seed {seed}: the scorers were tuned on runs like these)",
    "held-out": "Held-out (seeds {held_out}: never tuned on)",
}


def tables(scores: dict[str, dict[str, Any]], meta: dict[str, Any]) -> str:
    """One table per seed set, in-sample first: held-out figures are never pooled with
    the in-sample ones, so that tuning cannot flatter them."""
    sets = list(dict.fromkeys(row.get("seed_set", "in-sample") for row in scores.values()))
    if sets == ["in-sample"]:
        return table(scores)
    out = []
    for seed_set in sorted(sets, key=lambda s: s != "in-sample"):
        rows = {k: r for k, r in scores.items() if r.get("seed_set", "in-sample") == seed_set}
        title = SET_TITLES.get(seed_set, seed_set).format(
            seed=meta.get("seed"), held_out=", ".join(map(str, meta.get("held_out_seeds", []))))
        out.append(f"### {title}\n\n{table(rows)}")
    return "\n".join(out)


def markdown(scores: dict[str, dict[str, Any]], meta: dict[str, Any],
             plans: list[dict[str, Any]]) -> str:
    """The whole report: the table, how to read it, and what each scenario did."""
    out = [f"# Root-cause evaluation ({meta['mode']})\n",
           f"{meta['started']}, seed {meta['seed']}, "
           f"{meta.get('runs_done', meta['runs_total'])} of {meta['runs_total']} runs done, "
           f"spikes queried with baseline={meta['api_baseline']} step={meta['api_step']} "
           f"percentile={meta['percentile']}, match slack {meta['slack_s']:g} s.\n",
           _provenance(meta),
           tables(scores, meta),
           "Recall and delay are over faults; precision over the spikes of fault runs; false "
           "spikes per hour over analysable time outside fault windows (null runs: all of it), "
           "which the analysed-minutes column gives. "
           "Brackets: the 95% Wilson score interval of a proportion over its counts (runs, "
           "spikes or detected faults), so that 3 of 3 reads as [0.44, 1.00], not certainty. "
           "AC@k is over detected faults (misses count in recall). Random: a seeded uniformly "
           "random permutation of the six causes, averaged over draws (1/6 and 1/2 expected); "
           "in the llm_ scenarios, whose engine metrics are scraped, of ten (the engine's "
           "four too: 1/10 and 3/10). "
           "Max-z: the spike's causes re-sorted by robust z alone.\n",
           f"GPU throttling is {gpu_sim.LABEL}: no GPU was throttled.\n",
           _instances(scores),
           _conditions(plans),
           "## Scenarios\n"]
    for name in dict.fromkeys(str(row.get("scenario", key)) for key, row in scores.items()):
        out.append(f"- **{name}**: {DESCRIPTIONS[name]}")
    out.append("\n## Runs\n")
    out.append("| scenario | set | # | seed | fault at (s) | for (s) | magnitude |\n"
               "|---|---|---|---|---|---|---|")
    for plan in plans:
        magnitude = ", ".join(f"{k}={v}" for k, v in plan["magnitude"].items()) or "-"
        fault = ("-", "-") if plan["expected"] is None else (plan["fault_at_s"], plan["fault_s"])
        out.append(f"| {plan['scenario']} | {plan.get('seed_set', 'in-sample')} | {plan['index']} "
                   f"| {plan['seed']} | {fault[0]} | {fault[1]} | {magnitude} |")
    return "\n".join(out) + "\n"


def _instances(scores: dict[str, dict[str, Any]]) -> str:
    """For faults on one instance of several: how many matched spikes named it."""
    lines = [f"- {key}: {row['instance_named']} of {row['instance_faults']} detected faults "
             "had their spike named for the broken instance"
             for key, row in scores.items() if row.get("instance_faults")]
    return ("Faults on one instance of two:\n\n" + "\n".join(lines) + "\n") if lines else ""


def _where(plans: list[dict[str, Any]], key: str) -> str:
    """"in every run", or which scenarios' runs had decoys or noise; "" for none."""
    on = list(dict.fromkeys(p["scenario"] for p in plans if p.get(key)))
    if not on:
        return ""
    return "in every run" if len(on) == len({p["scenario"] for p in plans}) else (
        "in the runs of " + ", ".join(on))


def _conditions(plans: list[dict[str, Any]]) -> str:
    """What besides the fault was going on in the runs (decoys, noise), and in which."""
    parts = []
    if where := _where(plans, "decoys"):
        kinds = list(dict.fromkeys(k for p in plans for k in p.get("decoys", {})))
        posted = " and ".join(f"a {kind} event {low:g}-{high:g} s" for kind, (low, high)
                              in DECOY_LEADS_S.items() if kind in kinds and kind != "restart")
        restart = (f"; and {DECOY_LEADS_S['restart'][0]:g}-{DECOY_LEADS_S['restart'][1]:g} s "
                   "before it the server restarted at the same version, which the agent "
                   "reported") if "restart" in kinds else ""
        parts.append(f"Decoys {where}: {posted} before the fault, through the events API{restart}; "
                     "all changing nothing (the deploy names a version no request carries); the "
                     "truth stays the real fault, so a decoy ranked first is a miss.")
    if where := _where(plans, "noise"):
        parts.append(f"Noise {where}: a co-tenant process burned {cotenant.MIN_DUTY:.0%}-"
                     f"{cotenant.MAX_DUTY:.0%} of one core all run, the share moving every "
                     f"{cotenant.HOLD_S[0]:g}-{cotenant.HOLD_S[1]:g} s on a seeded walk, and "
                     f"every {cotenant.BATCH_EVERY_S[0]:g}-{cotenant.BATCH_EVERY_S[1]:g} s a "
                     f"batch job took {cotenant.BATCH_DUTY:.0%} of it for "
                     f"{cotenant.BATCH_S[0]:g}-{cotenant.BATCH_S[1]:g} s; in the server, "
                     "full garbage collections over a large heap every 3-9 s.")
    return (" ".join(parts) + "\n") if parts else ""


def _provenance(meta: dict[str, Any]) -> str:
    """How many runs per scenario the table holds and how to reproduce it."""
    runs = meta.get("runs_per_scenario")
    held = f"{runs} run(s) per scenario" if runs else "runs per scenario: see the Runs table"
    line = f"Holds {held}; produced by `{meta.get('command', 'python tests/scenarios/run.py')}`"
    if meta.get("resumed_from"):
        line += (f" (its runs already in `{meta['resumed_from']}` were kept and re-scored with "
                 "the current analysis over their recorded telemetry, not run again)")
    if meta.get("rescored"):
        line += (f", then re-scored {meta['rescored']} with the current analysis over the same "
                 f"recorded telemetry (`{meta['rescore_command']}`)")
    return line + ".\n"


def write(path: Path, scores: dict[str, dict[str, Any]], meta: dict[str, Any],
          records: list[dict[str, Any]]) -> tuple[Path, Path]:
    """The Markdown report at `path`, and everything (records included) beside it as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown(scores, meta, [r["plan"] for r in records]))
    data = path.with_suffix(".json")
    portable = [dict(r, workdir=_relative(r["workdir"])) if "workdir" in r else r for r in records]
    data.write_text(json.dumps({"meta": meta, "scores": scores, "runs": portable}, indent=1,
                               default=str))
    return path, data


def _relative(workdir: str) -> str:
    """Work folders inside the checkout are kept relative to it, so the JSON is portable."""
    path = Path(workdir)
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else workdir
