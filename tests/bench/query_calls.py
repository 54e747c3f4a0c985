"""The API calls queries.py times, against a real collector on the filled database.

Every (endpoint, window) gets a collector of its own: its first call is "cold" (DuckDB's
buffer pool empty, the collector's code paths not yet run), the next ones "warm". The
file itself was just written, so the operating system's page cache holds it in both
cases: cold here is not a cold disk. Times are wall-clock seconds from sending the
request to having read the whole body, as a client sees them.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common
from pyrometer.agent.stacks.parser import RawParser
from pyrometer.agent.stacks.sampler import find_pyspy
from pyrometer.collector.procs import start

SECOND = 1_000_000_000
# the worker-thread frames every collector query runs under: on every stack, saying nothing
PLUMBING = frozenset({"threading.py", "thread.py"})


@dataclass(frozen=True, slots=True)
class Call:
    """One API request to time: `kind` names the row it belongs to, `window_s` its length."""

    kind: str  # flamegraph, folded, diff, spikes
    window_s: int
    path: str
    params: dict[str, str]

    def url(self, api: str) -> str:
        return f"{api}{self.path}?{urllib.parse.urlencode(self.params)}"


@dataclass
class Timing:
    kind: str
    window_s: int
    cold_s: float
    warm_s: list[float]
    body_bytes: int
    detail: dict[str, Any] = field(default_factory=dict)


def flamegraph(service: str, end_s: int, window_s: int, fmt: str = "json") -> Call:
    return Call("flamegraph" if fmt == "json" else fmt, window_s, "/api/v1/flamegraph",
                {"service": service, "from": str(end_s - window_s), "to": str(end_s), "format": fmt})


def diff(service: str, end_s: int, window_s: int) -> Call:
    """The last `window_s` against the `window_s` before it."""
    return Call("diff", window_s, "/api/v1/flamegraph/diff", {
        "service": service, "from": str(end_s - window_s), "to": str(end_s),
        "baseline_from": str(end_s - 2 * window_s), "baseline_to": str(end_s - window_s)})


def spikes(service: str, end_s: int, window_s: int, step: str, baseline: str) -> Call:
    return Call("spikes", window_s, "/api/v1/spikes", {
        "service": service, "from": str(end_s - window_s), "to": str(end_s), "step": step,
        "baseline": baseline})


def get(url: str) -> tuple[float, bytes]:
    """Seconds until the whole body is read, and the body; an HTTP error is a failure."""
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as response:
        body: bytes = response.read()
    return time.perf_counter() - began, body


def _detail(call: Call, body: bytes) -> dict[str, Any]:
    """What the answer says about the data: samples merged, spikes found and their cause."""
    if call.kind == "folded":
        return {"lines": body.count(b"\n")}
    doc = json.loads(body)
    if call.kind == "flamegraph":
        return {"samples": doc["total"]}
    if call.kind == "diff":
        return {"baseline_samples": doc["baseline_total"], "target_samples": doc["target_total"]}
    found = doc["spikes"]
    return {"status": doc["status"], "spikes": len(found),
            "first": None if not found else {
                "start": found[0]["start"], "end": found[0]["end"], "route": found[0]["route"],
                "peak_ms": found[0]["peak_ms"], "baseline_ms": found[0]["baseline_ms"],
                "causes": [c["kind"] for c in found[0]["causes"][:3]]}}


def time_call(work: Path, db: Path | None, call: Call, warm: int, slow_s: float,
              store: Sequence[str] | None = None) -> Timing:
    """A fresh collector on `db` (or where the flags `store` say, as
    `common.start_collector` takes them): one cold call, then `warm` more (three at most
    when the cold one took over `slow_s`, to bound the run)."""
    collector = common.start_collector(work, "--retention", "off", db=db, store=store,
                                       name="query-collector")
    try:
        url = call.url(collector.ready.group("http"))
        cold, body = get(url)
        warm_s = [get(url)[0] for _ in range(warm if cold <= slow_s else min(warm, 3))]
    finally:
        collector.stop(signal.SIGTERM, timeout=60)
    return Timing(call.kind, call.window_s, cold, warm_s, len(body), _detail(call, body))


def pyspy_collector(work: Path, db: Path, call: Call, repeats: int) -> dict[str, Any]:
    """Where the collector's own threads spend a warm `call`, by py-spy at 250 Hz.

    One warm-up call first, then py-spy records while `repeats` calls run. Returns the
    share of the samples of collector threads (idle stacks excluded) in which each of
    the busiest functions was on the stack, and the leaf functions most often on top.
    """
    collector = common.start_collector(work, "--retention", "off", db=db, name="query-pyspy")
    out = work / "query-pyspy.txt"
    try:
        url = call.url(collector.ready.group("http"))
        get(url)
        spy = start("query-py-spy", [find_pyspy(), "record", "--format", "raw", "--nonblocking",
                                     "-r", "250", "-o", str(out), "--pid", str(collector.pid)],
                    "Sampling process", work)
        try:
            for _ in range(repeats):
                get(url)
        finally:
            spy.stop(signal.SIGINT, timeout=60)
    finally:
        collector.stop(signal.SIGTERM, timeout=60)
    return summarise_raw(out.read_text() if out.exists() else "")


def summarise_raw(raw: str, top: int = 8) -> dict[str, Any]:
    """Inclusive and leaf shares per function (``name (file)``) of py-spy's raw output,
    thread plumbing and lambdas left out."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for key, count in RawParser().parse_text(raw):
        names = [f"{f.name} ({f.file.rsplit('/', 1)[-1]})" for f in key.stack
                 if f.file.rsplit("/", 1)[-1] not in PLUMBING and "<lambda>" not in f.name]
        if not names:
            continue
        total += count
        for name in set(names):
            inclusive[name] += count
        leaf[names[-1]] += count
    return {"samples": total,
            "inclusive": [(name, n / total) for name, n in inclusive.most_common(top * 3)],
            "leaf": [(name, n / total) for name, n in leaf.most_common(top)]}
