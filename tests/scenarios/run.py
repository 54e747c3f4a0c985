"""`python tests/scenarios/run.py [--quick] [--runs N] [--out FILE]`: the root-cause evaluation.

Full mode runs every scenario (six faults, three compound ones, three LLM-serving faults on the
streamed-token server and the null soak) N times with seeded
magnitudes and fault times, and writes the per-scenario table to tests/scenarios/results.md
(with everything behind it in results.json). --quick runs two scenarios once each, in
compressed time, for the test suite. --seeds picks the in-sample runs (from --seed, the
runs the scorers were tuned on), the held-out runs (plan.HELD_OUT_SEEDS, never tuned on),
or both; the report keeps them in separate tables. --requery DIR asks a fresh collector on each kept
run's database again, to re-score an existing evaluation after the analysis changed.
--resume JSON finishes an evaluation that was stopped, or grows one (the held-out set
after the in-sample one): the runs of that results JSON whose plan is one of this
evaluation's are re-queried, not run again, and the others run. The full evaluation is
four to five hours on two cores, so it can be done in sittings; every run in the table
is scored by the same, current analysis either way.
"""

from __future__ import annotations

import argparse
import datetime
import json
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `scenarios` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "scenarios"

from scenarios import harness, metrics, report  # noqa: E402
from scenarios.plan import (  # noqa: E402
    FULL,
    HELD_OUT_SEEDS,
    IN_SAMPLE_SEED,
    QUICK,
    SEED_SETS,
    RunPlan,
    plan_runs,
)

RESULTS = Path(__file__).resolve().parent / "results.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fault-injection evaluation of spike detection "
                                     "and cause ranking.")
    parser.add_argument("--quick", action="store_true", help="two scenarios, one run each, ~90 s each")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario (full mode; default 3)")
    parser.add_argument("--scenarios", help="comma-separated subset of the scenarios")
    parser.add_argument("--seed", type=int, default=IN_SAMPLE_SEED,
                        help=f"base seed of the in-sample runs (default {IN_SAMPLE_SEED})")
    parser.add_argument("--seeds", choices=("in-sample", "held-out", "both"), default="in-sample",
                        help="which seed set to run: in-sample (the scorers were tuned on it), "
                        "held-out (never tuned on) or both, reported apart (default in-sample)")
    parser.add_argument("--decoys", action=argparse.BooleanOptionalAction, default=None,
                        help="post a deploy and a config event that change nothing shortly "
                        "before each fault (default: on in the full run, off with --quick)")
    parser.add_argument("--noise", action=argparse.BooleanOptionalAction, default=None,
                        help="run a co-tenant burning a varying share (5-40%%) of one core and a "
                        "periodic batch job, and GC pauses in the server, throughout (default: "
                        "on in the full run, off with --quick)")
    parser.add_argument("--out", help="Markdown report (default tests/scenarios/results.md; quick: in "
                        "the work folder); JSON beside it")
    parser.add_argument("--workdir", help="where each run keeps its database and logs "
                        "(default: a new folder under build/rca)")
    parser.add_argument("--requery", metavar="JSON", help="re-ask the collector about the runs "
                        "recorded in this results JSON (their work folders must still exist)")
    parser.add_argument("--resume", metavar="JSON", help="keep the runs of this earlier results "
                        "JSON that this evaluation plans (re-queried with today's analysis; their "
                        "work folders must still exist) and run only the rest")
    return parser.parse_args(argv)


def run_all(plans: list[RunPlan], timing: Any, workdir: Path, meta: dict[str, Any],
            out: Path, kept: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run the plans in order, rewriting the report after each: a long evaluation that is
    stopped early still leaves the table of what finished (and `kept`, runs resumed from
    an earlier one, come first)."""
    records = list(kept or [])
    done = {_key(r["plan"]) for r in records}
    for n, plan in enumerate(plans, start=1):
        if _key(plan.as_dict()) in done:
            continue
        began = time.monotonic()
        record = harness.run_one(plan, timing, run_folder(workdir, plan))
        records.append(record)
        print(f"[{n}/{len(plans)}] {plan.scenario} #{plan.index} {plan.magnitude or ''}: "
              f"{_outcome(record)} ({time.monotonic() - began:.0f} s)", flush=True)
        _write(out, dict(meta, runs_done=len(records)), records)
    return records


def run_folder(workdir: Path, plan: RunPlan) -> Path:
    """Where one run keeps its database and logs: apart for each seed set, since the
    in-sample and held-out runs of a scenario share its indexes (with --seeds both, one
    folder each would have the later run overwrite the earlier one's database, and a
    re-scoring read the wrong run)."""
    name = f"{plan.scenario}-{plan.index}"
    return workdir / (name if plan.seed_set == "in-sample" else f"{plan.seed_set}-{name}")


def _write(out: Path, meta: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    timing = QUICK if meta["mode"] == "quick" else FULL
    scores = metrics.score(records, _seconds(timing.api_baseline), harness.SETTINGS.slack_s,
                           meta["seed"])
    report.write(out, scores, meta, records)
    return scores


def _key(plan: object) -> str:
    """A plan as a comparable string: two runs are the same run when every drawn value is."""
    return json.dumps(plan, sort_keys=True)


def _outcome(record: dict[str, Any]) -> str:
    if "error" in record:
        return f"FAILED {record['error']}"
    spikes = metrics.spikes_of(record)
    tops = [metrics.rank_pyrometer(s)[:1] for s in spikes]
    return (f"spikes HTTP {record.get('spikes_http')}, {len(spikes)} spike(s), "
            f"top causes {tops}, truth {record.get('truth', {}) and record['truth']['kind']}")


def requery(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start a collector on each kept run's database and query it again."""
    data = json.loads(path.read_text())
    return data["meta"], requery_records(data["meta"], data["runs"])


def resumable(path: Path, plans: list[RunPlan], mode: str) -> list[dict[str, Any]]:
    """The runs of an earlier evaluation that this one plans, re-queried; ValueError when
    that evaluation cannot be resumed by this one."""
    try:
        data = json.loads(path.read_text())
        meta, runs = data["meta"], data["runs"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--resume {path}: not a results JSON ({err})") from err
    if meta.get("mode") != mode:
        raise ValueError(f"--resume {path}: a {meta.get('mode')} evaluation, this one is {mode}")
    wanted = {_key(p.as_dict()) for p in plans}
    # a run that failed is run again; one planned differently (another seed or
    # magnitude, decoys or noise switched) is not this evaluation's
    kept = [r for r in runs if "error" not in r
            and _key(r.get("plan")) in wanted]
    missing = [r["workdir"] for r in kept if not (report.REPO / r["workdir"]).is_dir()]
    if missing:
        raise ValueError(f"--resume {path}: the work folders of {len(missing)} kept run(s) "
                         f"are gone ({missing[0]}, ...): they cannot be re-scored")
    return requery_records(meta, kept)


def requery_records(meta: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Query each record's kept database again with today's analysis (in place)."""
    timing = QUICK if meta["mode"] == "quick" else FULL
    for record in records:
        if "error" in record:
            continue
        workdir = report.REPO / record["workdir"]  # relative to the checkout, or absolute
        stack = harness.Stack(workdir, RunPlan(**{k: record["plan"][k] for k in (
            "scenario", "index", "seed", "fault_at_s", "fault_s", "total_s", "magnitude",
            "seed_set", "decoys", "noise") if k in record["plan"]}),
            harness.SETTINGS)
        try:
            _, api = stack.start_collector()
            window = record["window"]
            record.update(harness._query(api, window["from"], window["to"], timing, harness.SETTINGS))
        finally:
            stack.close()
    return records


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM unwinds like an exception, so each run's `finally` stops its processes.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    command = " ".join(["python tests/scenarios/run.py", *(sys.argv[1:] if argv is None else argv)])
    if args.requery:
        meta, records = requery(Path(args.requery))
        # the telemetry is the original runs'; the analysis (and so the table) is today's
        meta = dict(meta, rescored=datetime.datetime.now(datetime.UTC).isoformat(
            timespec="seconds"), rescore_command=command)
        out = Path(args.out) if args.out else Path(args.requery).with_suffix(".md")
    else:
        names = tuple(args.scenarios.split(",")) if args.scenarios else None
        sets = SEED_SETS if args.seeds == "both" else (args.seeds,)
        try:
            timing, plans = plan_runs(args.quick, args.runs, args.seed, names, sets, args.decoys,
                                     args.noise)
            kept = resumable(Path(args.resume), plans, "quick" if args.quick else "full") \
                if args.resume else []
        except ValueError as err:
            print(f"run.py: {err}", file=sys.stderr)
            return 2
        root = Path(__file__).resolve().parents[2] / "build" / "rca"
        root.mkdir(parents=True, exist_ok=True)
        workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(
            prefix=("quick-" if args.quick else "full-"), dir=root))
        kept_keys = {_key(r["plan"]) for r in kept}
        todo = [p for p in plans if _key(p.as_dict()) not in kept_keys]
        print(f"{len(plans)} runs ({len(kept)} kept from {args.resume}), " if kept else
              f"{len(plans)} runs, ", end="")
        print(f"about {sum(p.total_s for p in todo) / 60:.0f} min of scenario time; logs and "
              f"databases in {workdir}", flush=True)
        meta = {"mode": "quick" if args.quick else "full", "seed": args.seed,
                "seed_sets": list(sets), "decoys": any(p.decoys for p in plans),
                "noise": any(p.noise for p in plans),
                "held_out_seeds": list(HELD_OUT_SEEDS[:len({
                    p.index for p in plans if p.seed_set == "held-out"})]),
                "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "runs_total": len(plans), "runs_per_scenario": 1 if args.quick else args.runs,
                "command": command, "resumed_from": args.resume,
                "api_baseline": timing.api_baseline,
                "api_step": timing.api_step, "percentile": harness.SETTINGS.percentile,
                "slack_s": harness.SETTINGS.slack_s}
        out = Path(args.out) if args.out else (workdir / "results.md" if args.quick else RESULTS)
        records = run_all(plans, timing, workdir, meta, out, kept)
    scores = _write(out, meta, records)
    print(report.tables(scores, meta))
    print(f"report: {out}\ndata:   {out.with_suffix('.json')}")
    return 1 if any("error" in r for r in records) else 0


def _seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(duration[:-1]) * units[duration[-1]]


if __name__ == "__main__":
    sys.exit(main())
