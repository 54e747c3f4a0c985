"""Realistic ingest batches for the collector ingest benchmark, built before the clock starts.

One stream is one agent profiling an ML inference server at 100 Hz in 10 s windows: a
window holds 1,000 samples drawn from a fixed set of stacks with Zipf-like weights
(a few hot stacks, a long tail), and each batch carries 10 s of telemetry at 1 Hz (a
process, a host and a GPU reading per second) and the requests the server answered in
them (REQUEST_RATE a second, as the query benchmark's day has, unless a level asks for a
busier server), as the agent's buffer does.

The stacks imitate a web framework dispatching into a transformer's forward pass: a
shared server prefix, then a random call tree whose branches share their upper frames,
so that distinct frames are far fewer than depth times stacks, as in a real capture.
There is no recording of a real program in the repository, hence this generator; it
is seeded, so every run sends the same stacks and counts.

Batches are encoded once with the agent's own `StreamEncoder` and then only stamped
per send (agent id, sequence number, window and record times) and serialised: that
is all a load generator does per batch, so it stays cheap next to the collector.
"""

from __future__ import annotations

import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from pyrometer.agent.shared.model import (
    NANOS_PER_SECOND,
    Frame,
    GpuReading,
    HostReading,
    ProcessReading,
    ProfileWindow,
    RequestRecord,
    SampleKey,
    Stack,
    Telemetry,
)
from pyrometer.agent.ship.encoder import AgentIdentity, StreamEncoder
from pyrometer.proto import ingest_pb2

RATE_HZ = 100.0
WINDOW_S = 10
WINDOW_NS = WINDOW_S * NANOS_PER_SECOND
SAMPLES_PER_WINDOW = int(RATE_HZ) * WINDOW_S
STACKS = 150
DEPTH = (20, 40)
VARIANTS = 8  # distinct windows a stream cycles through
SERVICES = 10  # a fleet: agents spread over this many services
TARGET_PID = 4242
# requests a second per agent: what the query benchmark's day holds (query_fill.py); a
# busy model server sends more, and each one is a record for the collector to check and
# store (until commit 9385307 these batches carried none)
REQUEST_RATE = 2
DRAIN_IN_FLIGHT = 8  # an agent draining its spool: its shipper's window (agent/ship/shipper.py)

_PREFIX = [
    ("<module>", "server.py"), ("run", "uvicorn/main.py"), ("run", "asyncio/runners.py"),
    ("run_until_complete", "asyncio/base_events.py"), ("run_forever", "asyncio/base_events.py"),
    ("_run_once", "asyncio/base_events.py"), ("_run", "asyncio/events.py"),
    ("run_asgi", "uvicorn/protocols/http/httptools_impl.py"),
    ("__call__", "fastapi/applications.py"), ("__call__", "starlette/middleware/errors.py"),
    ("__call__", "starlette/routing.py"), ("handle", "starlette/routing.py"),
    ("app", "fastapi/routing.py"), ("run_endpoint_function", "fastapi/routing.py"),
    ("predict", "app/server.py"),
]
_PACKAGES = ("transformers/models/llama", "transformers/generation", "torch/nn/modules",
             "torch/nn/functional", "torch/_tensor", "tokenizers", "numpy/core", "app")
_VERBS = ("forward", "_call_impl", "apply", "sample", "decode", "encode", "prepare", "update",
          "rotate", "project", "normalize", "softmax", "matmul", "gather", "pad", "cache")
_NOUNS = ("attention", "mlp", "layer", "logits", "inputs", "rotary", "kv", "batch", "tokens",
          "weights", "mask", "hidden", "scores", "embedding")


FRAME_POOL = 250  # distinct functions below the prefix: real code calls the same ones often


def _frame(rng: random.Random) -> Frame:
    package = rng.choice(_PACKAGES)
    name = f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}"
    module = f"{rng.choice(_NOUNS)}.py"
    return Frame(name, f"/opt/venv/lib/python3.11/site-packages/{package}/{module}",
                 rng.randint(20, 2000))


def make_stacks(seed: int = 7, count: int = STACKS) -> list[Stack]:
    """`count` distinct stacks of DEPTH frames that share a prefix and their upper calls.

    Each stack walks down a call tree from the server prefix: at every level it takes
    an existing child (so stacks share their upper frames) or, more often lower down,
    adds a child drawn from a pool of FRAME_POOL functions (so deep frames recur too).
    """
    rng = random.Random(seed)
    pool = [_frame(rng) for _ in range(FRAME_POOL)]
    prefix = tuple(Frame(name, f"/opt/venv/lib/python3.11/site-packages/{file}", i * 7 + 11)
                   for i, (name, file) in enumerate(_PREFIX))
    children: dict[Stack, list[Frame]] = {}
    stacks: set[Stack] = set()
    while len(stacks) < count:
        stack: Stack = prefix
        for level in range(rng.randint(*DEPTH) - len(prefix)):
            known = children.setdefault(stack, [])
            fresh = not known or rng.random() < 0.1 + 0.03 * level
            if fresh:
                known.append(rng.choice(pool))
            stack = stack + (known[-1] if fresh else rng.choice(known),)
        stacks.add(stack)
    return sorted(stacks, key=lambda s: [(f.name, f.file, f.line) for f in s])


def window_counts(stacks: list[Stack], rng: random.Random, first: bool = False) -> dict[SampleKey, int]:
    """One window's counts: SAMPLES_PER_WINDOW draws with weight 1/rank; the first
    window of a stream holds every stack at least once, so its dictionary has them all
    and later batches need no dictionary entries at all (the agent's steady state)."""
    weights = [1.0 / (rank + 1) for rank in range(len(stacks))]
    draws = SAMPLES_PER_WINDOW - (len(stacks) if first else 0)
    counts = Counter(rng.choices(range(len(stacks)), weights, k=draws))
    if first:
        counts.update(range(len(stacks)))
    return {SampleKey(stacks[i]): n for i, n in sorted(counts.items())}


def requests(start_ns: int, rate: int = REQUEST_RATE) -> tuple[RequestRecord, ...]:
    """A window's requests: `rate` a second, two routes, latency growing with the
    tokens asked for, each with a W3C trace id (its end time is stamped per send)."""
    rng = random.Random(start_ns)
    out = []
    for i in range(WINDOW_S * rate):
        tokens = rng.randint(64, 1023)
        out.append(RequestRecord(
            end_ns=start_ns + (i + 1) * NANOS_PER_SECOND // rate,
            latency_ns=int((12 + 0.04 * tokens + 25 * rng.random() ** 6) * 1e6),
            request_bytes=tokens * 4 + 300, response_bytes=600 + tokens,
            route="/v1/embed" if i % 10 == 0 else "/v1/predict", method="POST", status=200,
            app_size=tokens, pid=TARGET_PID, trace_id=f"{rng.getrandbits(128):032x}"))
    return tuple(out)


def telemetry(start_ns: int, request_rate: int = REQUEST_RATE) -> Telemetry:
    """10 s of 1 Hz readings of the target process, the host and one GPU, and the
    requests served in them."""
    seconds = [start_ns + (i + 1) * NANOS_PER_SECOND for i in range(WINDOW_S)]
    return Telemetry(
        requests=requests(start_ns, request_rate),
        process=tuple(ProcessReading(t, TARGET_PID, 1.0, 0.75, 0.125, 6 * 2**30, 48, 900, 40)
                      for t in seconds),
        host=tuple(HostReading(t, 37.5, 16, 80 * 2**30, 128 * 2**30, 5.25, 1.5, 0.0, 0.0, 0.5, 0.0)
                   for t in seconds),
        gpu=tuple(GpuReading(t, 0, "GPU-5c1e2a90", "NVIDIA H100 80GB HBM3", temperature_c=64.0,
                             sm_clock_mhz=1980, sm_clock_max_mhz=1980, clock_event_reasons=0,
                             power_mw=455_000, power_limit_mw=700_000,
                             memory_used_bytes=61 * 2**30, memory_total_bytes=80 * 2**30,
                             utilization_gpu_pct=87, utilization_memory_pct=41,
                             performance_state=0, process_memory_bytes=60 * 2**30)
                  for t in seconds),
    )


def identity(stream: int, run_id: str, services: int = SERVICES) -> AgentIdentity:
    """Stream `stream`'s agent: its own id, one of `services` services, its own instance."""
    return AgentIdentity(agent_id=f"{run_id}-{stream:05d}", service=f"bench-{stream % services}",
                         instance=f"replica-{stream:05d}", host=f"node-{stream // 8:04d}",
                         target_pid=TARGET_PID, labels=(("version", "v1"),),
                         agent_version="bench")


@dataclass
class Batches:
    """The first batch (with the whole dictionary) and VARIANTS steady-state batches,
    encoded once; `first`/`steady` stamp one for a stream and serialise it."""

    first_msg: ingest_pb2.Batch
    steady_msgs: list[ingest_pb2.Batch]
    first_samples: int
    steady_samples: list[int]
    base_ns: int  # start of every stream's first window
    run_id: str
    services: int = SERVICES
    # each batch's window the WINDOW_S seconds before it is encoded (sent), as a real
    # agent's, instead of the stream's timeline from base_ns (which a fill needs)
    current: bool = False
    request_rate: int = REQUEST_RATE  # requests a second in each batch

    @classmethod
    def build(cls, base_ns: int, run_id: str | None = None, seed: int = 7,
              services: int = SERVICES, current: bool = False,
              request_rate: int = REQUEST_RATE) -> Batches:
        stacks, rng = make_stacks(seed), random.Random(seed + 1)
        encoder = StreamEncoder(identity(0, "template"))
        first = ProfileWindow(base_ns, base_ns + WINDOW_NS, RATE_HZ, window_counts(stacks, rng, True))
        first_msg = encoder.encode(1, first, telemetry(base_ns, request_rate), "v1")
        windows = [ProfileWindow(base_ns, base_ns + WINDOW_NS, RATE_HZ, window_counts(stacks, rng))
                   for _ in range(VARIANTS)]
        steady = [encoder.encode(2, w, telemetry(base_ns, request_rate), "v1") for w in windows]
        if any(m.dictionary.strings or m.dictionary.frames or m.dictionary.stacks for m in steady):
            raise AssertionError("steady-state batches must not carry dictionary entries")
        return cls(first_msg, steady, first.total, [w.total for w in windows], base_ns,
                   run_id or uuid.uuid4().hex[:12], services, current, request_rate)

    def samples(self, seq: int) -> int:
        """Samples in batch `seq` of any stream."""
        return self.first_samples if seq == 1 else self.steady_samples[seq % VARIANTS]

    def encode(self, stream: int, seq: int) -> bytes:
        """Batch `seq` of stream `stream`: its window starts (seq - 1) windows after base,
        or ends now when the batches are `current`."""
        msg = self.first_msg if seq == 1 else self.steady_msgs[seq % VARIANTS]
        start = (time.time_ns() - WINDOW_NS if self.current
                 else self.base_ns + (seq - 1) * WINDOW_NS)
        who = identity(stream, self.run_id, self.services)
        agent = msg.agent
        agent.agent_id, agent.service = who.agent_id, who.service
        agent.instance, agent.host = who.instance, who.host
        msg.seq = seq
        msg.profile.start_unix_nanos, msg.profile.end_unix_nanos = start, start + WINDOW_NS
        for records in (msg.process, msg.host, msg.gpu):
            for i, record in enumerate(records):
                record.time_unix_nanos = start + (i + 1) * NANOS_PER_SECOND
        for i, request in enumerate(msg.requests):
            request.end_unix_nanos = start + (i + 1) * NANOS_PER_SECOND // self.request_rate
        return msg.SerializeToString()
