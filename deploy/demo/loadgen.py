"""Open-loop load generator for the demo model server (standard library only).

Requests are scheduled at the target rate whatever the server does (open loop): a
slow server makes requests wait, it does not slow the schedule down. Latency is
measured from each request's scheduled time, so time spent waiting for a free
sender counts too and a stall is not hidden (no coordinated omission).

CLI::

    python deploy/demo/loadgen.py --url http://127.0.0.1:8000 --rate 20 --duration 60

prints ``loadgen started: ...`` once sending, then one JSON summary line and exits:
``{"sent", "ok", "errors", "error_kinds", "p50_ms", "p99_ms", "max_ms",
"mean_words", "elapsed_s", "target_rate", "achieved_rate"}``. ``sent`` counts
scheduled requests; ``ok + errors == sent``. Exit status 1 if every request failed.

``--schedule JSON`` changes the load mid-run, for fault-injection scenarios (a traffic
surge, a payload-size shift): a list of steps ``{"at": SECONDS_AFTER_START, "rate"?,
"text_words"?}``, each keeping what it does not name. When a step takes effect the
generator prints ``loadgen step: {"at", "rate", "text_words", "unix"}`` (``unix`` is
the wall-clock time it took effect), so a harness can record when the load changed.
``target_rate`` in the summary stays the starting rate.

``--endpoint generate`` sends to the streamed-token demo server (llm_server.py) instead:
``POST /v1/generate {"prompt", "max_tokens"}`` with a prompt of the drawn number of words
(``--text-words`` and the schedule's ``text_words`` are its size knob) and
``--max-tokens`` tokens to generate; each streamed answer is read to its end, and one
whose last line is not a finished generation counts as an error (``stream_error``).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import queue
import random
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from urllib.parse import urlsplit

SIZE_DISTS = ("lognormal", "exponential", "fixed")
ENDPOINTS = {"predict": "/v1/predict", "generate": "/v1/generate"}
ARRIVALS = ("poisson", "uniform")
LOGNORMAL_SIGMA = 0.6
WORDS = (  # a support-ticket vocabulary, so payloads look like the model's input
    "order", "invoice", "refund", "charge", "card", "payment", "account", "login",
    "password", "reset", "shipping", "delivery", "package", "tracking", "late",
    "damaged", "broken", "return", "exchange", "warranty", "repair", "install",
    "setup", "update", "error", "crash", "slow", "price", "discount", "coupon", "plan",
    "upgrade", "cancel", "subscription", "privacy", "data", "delete", "email", "phone",
    "address", "store", "stock", "available", "size", "color", "quality", "support",
    "agent", "thanks", "please", "help", "urgent", "again", "still", "never", "always",
    "today", "yesterday", "week", "month", "the", "a", "my", "your", "is", "was",
    "not", "and", "but", "with", "for", "on",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Step:
    """From ``at`` seconds after the start on, send at ``rate`` with ``text_words``."""

    at: float
    rate: float | None = None
    text_words: float | None = None


def parse_schedule(text: str) -> list[Step]:
    """``--schedule`` JSON to steps in time order; ValueError says what is wrong."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise ValueError("--schedule: not JSON") from None
    if not isinstance(raw, list):
        raise ValueError("--schedule: expected a JSON list of steps")
    steps = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"at", "rate", "text_words"}:
            raise ValueError(f"--schedule: {item!r}: keys are at, rate, text_words")
        values = [item.get(k) for k in ("at", "rate", "text_words")]
        if not all(v is None or (isinstance(v, int | float) and v >= 0) for v in values):
            raise ValueError(f"--schedule: {item!r}: values must be non-negative numbers")
        if item.get("at") is None or item.get("rate") == 0 or item.get("text_words") == 0:
            raise ValueError(f"--schedule: {item!r}: needs at; rate and text_words must be > 0")
        steps.append(Step(float(item["at"]), item.get("rate"), item.get("text_words")))
    return sorted(steps, key=lambda step: step.at)


@dataclass(frozen=True, slots=True)
class LoadSummary:
    """What one run did; latencies are of successful requests, from scheduled time."""

    sent: int
    ok: int
    errors: int
    error_kinds: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    mean_words: float = 0.0
    elapsed_s: float = 0.0  # sending plus waiting for the last replies
    target_rate: float = 0.0
    achieved_rate: float = 0.0  # scheduled requests per second of sending

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def draw_words(rng: random.Random, mean: float, dist: str) -> int:
    """A payload size in words, at least 1, with the given mean."""
    if dist == "fixed":
        return max(1, round(mean))
    if dist == "exponential":
        return max(1, round(rng.expovariate(1.0 / mean)))
    # mu chosen so that the lognormal's mean, not its median, is `mean`
    mu = math.log(mean) - LOGNORMAL_SIGMA**2 / 2
    return max(1, round(rng.lognormvariate(mu, LOGNORMAL_SIGMA)))


def _percentile(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    rank = max(0, math.ceil(q * len(sorted_ms)) - 1)  # nearest rank
    return round(sorted_ms[rank], 3)


def _target(url: str, endpoint: str = "predict") -> tuple[str, int, str]:
    """Host, port and path; a bare base URL means the endpoint's own path."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url!r}: expected http://HOST:PORT[/path]")
    path = parts.path if parts.path not in ("", "/") else ENDPOINTS[endpoint]
    return parts.hostname, parts.port or 80, path


def _body(endpoint: str, words: str, max_tokens: int) -> bytes:
    if endpoint == "generate":
        return json.dumps({"prompt": words, "max_tokens": max_tokens}).encode()
    return json.dumps({"text": words}).encode()


def _finished_stream(body: bytes) -> bool:
    """Whether a streamed generation ended with its finish line."""
    last = body.rstrip(b"\n").rpartition(b"\n")[2]
    try:
        return json.loads(last).get("finish_reason") == "length"
    except (ValueError, AttributeError):
        return False


class _Sender(threading.Thread):
    """Takes scheduled requests off the queue and posts them, one at a time."""

    def __init__(
        self,
        jobs: queue.Queue[tuple[float, bytes] | None],
        results: list[tuple[float, str]],
        target: tuple[str, int, str],
        timeout: float,
        give_up_at: list[float],  # a one-element box: set when the schedule ends
        streamed: bool = False,  # answers are token streams, to be read to their end
    ) -> None:
        super().__init__(name="loadgen-sender", daemon=True)
        self._jobs, self._results, self._target = jobs, results, target
        self._timeout, self._give_up_at, self._streamed = timeout, give_up_at, streamed

    def run(self) -> None:
        while (job := self._jobs.get()) is not None:
            scheduled, body = job
            if time.monotonic() > self._give_up_at[0]:
                self._results.append((0.0, "abandoned"))  # still queued when time ran out
                continue
            outcome = self._post(body)
            self._results.append(((time.monotonic() - scheduled) * 1000, outcome))

    def _post(self, body: bytes) -> str:
        host, port, path = self._target
        conn = http.client.HTTPConnection(host, port, timeout=self._timeout)
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return f"http_{response.status}"
            return "ok" if not self._streamed or _finished_stream(body) else "stream_error"
        except TimeoutError:
            return "timeout"
        except (OSError, http.client.HTTPException):
            return "connection"
        finally:
            conn.close()


def run_load(
    url: str, rate: float, duration: float, *, max_requests: int | None = None,
    text_words: float = 32.0, size_dist: str = "lognormal", arrival: str = "poisson",
    senders: int = 16, timeout: float = 10.0, seed: int | None = 0,
    stop: threading.Event | None = None, on_start: Callable[[], None] | None = None,
    schedule: Sequence[Step] = (), on_step: Callable[[Step, float], None] | None = None,
    endpoint: str = "predict", max_tokens: int = 16,
) -> LoadSummary:  # fmt: skip
    """Send predictions to ``url`` at ``rate``/s for ``duration`` s (or ``max_requests``);
    with ``endpoint="generate"``, generations of ``max_tokens`` tokens, streamed.

    Returns once every scheduled request has finished, or has been abandoned
    ``timeout`` seconds after the schedule ended. Setting ``stop`` ends the schedule early.
    ``schedule`` changes rate and payload size at given offsets from the start;
    ``on_step`` is called with each step and the wall-clock time it took effect.
    """
    if rate <= 0 or duration < 0 or text_words <= 0 or senders < 1:
        raise ValueError("rate, text_words and senders must be positive, duration not negative")
    if size_dist not in SIZE_DISTS or arrival not in ARRIVALS or endpoint not in ENDPOINTS:
        raise ValueError(f"size_dist must be one of {SIZE_DISTS}, arrival one of {ARRIVALS}, "
                         f"endpoint one of {tuple(ENDPOINTS)}")
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    target, rng, stop = _target(url, endpoint), random.Random(seed), stop or threading.Event()
    jobs: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
    results: list[tuple[float, str]] = []  # list.append is atomic; no lock needed
    give_up_at = [math.inf]
    pool = [_Sender(jobs, results, target, timeout, give_up_at, endpoint == "generate")
            for _ in range(senders)]
    for sender in pool:
        sender.start()
    if on_start is not None:
        on_start()
    start = time.monotonic()
    end, due, sent, words = start + duration, start, 0, 0
    pending = sorted(schedule, key=lambda step: step.at)
    base_rate = rate
    while due < end and (max_requests is None or sent < max_requests):
        if pending and start + pending[0].at <= due:
            # Wait for the step's own time, so the time reported is when it took effect.
            if stop.wait(max(0.0, start + pending[0].at - time.monotonic())):
                break
            step = pending.pop(0)
            rate, text_words = step.rate or rate, step.text_words or text_words
            due = max(due, start + step.at)
            if on_step is not None:
                on_step(step, time.time())
            continue
        if stop.wait(max(0.0, due - time.monotonic())):
            break
        n = draw_words(rng, text_words, size_dist)
        body = _body(endpoint, " ".join(rng.choice(WORDS) for _ in range(n)), max_tokens)
        jobs.put((due, body))
        sent, words = sent + 1, words + n
        due += rng.expovariate(rate) if arrival == "poisson" else 1.0 / rate
    sending_s = time.monotonic() - start
    give_up_at[0] = time.monotonic() + timeout
    for _ in pool:
        jobs.put(None)
    for sender in pool:
        sender.join()
    elapsed = time.monotonic() - start
    latencies = sorted(ms for ms, outcome in results if outcome == "ok")
    kinds = Counter(outcome for _, outcome in results if outcome != "ok")
    return LoadSummary(
        sent=sent, ok=len(latencies), errors=sum(kinds.values()), error_kinds=dict(kinds),
        p50_ms=_percentile(latencies, 0.50), p99_ms=_percentile(latencies, 0.99),
        max_ms=round(latencies[-1], 3) if latencies else None,
        mean_words=round(words / sent, 2) if sent else 0.0, elapsed_s=round(elapsed, 3),
        target_rate=base_rate, achieved_rate=round(sent / sending_s, 3) if sending_s > 0 else 0.0,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ready line, load, one JSON summary line."""
    parser = argparse.ArgumentParser(description="Open-loop load for the demo model server.")
    parser.add_argument("--url", required=True, help="server base URL or full endpoint URL")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of sending")
    parser.add_argument("--max-requests", type=int, default=None)
    parser.add_argument("--text-words", type=float, default=32.0, help="mean words per request")
    parser.add_argument("--size-dist", choices=SIZE_DISTS, default="lognormal")
    parser.add_argument("--arrival", choices=ARRIVALS, default="poisson")
    parser.add_argument("--senders", type=int, default=16, help="concurrent connections at most")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--endpoint", choices=tuple(ENDPOINTS), default="predict",
                        help="predict (model_server.py) or generate (llm_server.py, streamed)")
    parser.add_argument("--max-tokens", type=int, default=16,
                        help="tokens to generate per request (--endpoint generate)")
    parser.add_argument("--schedule", default="[]",
                        help='JSON steps, e.g. [{"at": 60, "rate": 100}, {"at": 90, "rate": 20}]')
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def ready() -> None:
        print(f"loadgen started: url={args.url} rate={args.rate}/s duration={args.duration}s",
              flush=True)  # fmt: skip

    def stepped(step: Step, unix: float) -> None:
        line = {"at": step.at, "rate": step.rate, "text_words": step.text_words, "unix": unix}
        print(f"loadgen step: {json.dumps(line)}", flush=True)

    try:
        schedule = parse_schedule(args.schedule)
        summary = run_load(
            args.url, args.rate, args.duration, max_requests=args.max_requests,
            text_words=args.text_words, size_dist=args.size_dist, arrival=args.arrival,
            senders=args.senders, timeout=args.timeout, seed=args.seed, stop=stop, on_start=ready,
            schedule=schedule, on_step=stepped, endpoint=args.endpoint, max_tokens=args.max_tokens,
        )  # fmt: skip
    except ValueError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    print(summary.to_json(), flush=True)
    return 1 if summary.sent and not summary.ok else 0


if __name__ == "__main__":
    sys.exit(main())
