"""Load generator for the collector ingest benchmark: one process, many agent streams.

Run by ingest_load.py (and lake_ingest.py), never by hand. It reads a JSON plan on its
first stdin line, opens one gRPC channel (its own TCP connection, gzip like the agent's)
and one Ingest stream per agent, stream i to collector i mod len(plan["addresses"]),
sends every stream's first batch (the one with the dictionary) and
waits for those acks, then prints ``ready {...}``. The next stdin line, ``go {...}``,
gives the monotonic times (shared by all processes on the machine) at which to start
sending, start and stop counting, and stop sending. At the end it closes every stream
after its last ack and prints ``result {...}``.

Two ways to send. "closed": each stream keeps up to `in_flight` batches unacknowledged
and sends the next as soon as one is acked, which finds the collector's saturation.
"paced": each stream sends one batch every `period_s` from a random phase, as a real
agent does (its `max_in_flight` of 8 still bounds it), which measures ack latency at a
given offered load. A plan's optional "batches" ends each stream after that many
(a fill of known size rather than a timed load), and "services" spreads the agents over
that many services (ingest_workload.SERVICES by default).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

if __package__ in (None, ""):  # run as a script: make `bench` importable as a package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench.ingest_workload import REQUEST_RATE, SERVICES, Batches  # noqa: E402
from pyrometer.proto import ingest_pb2  # noqa: E402

METHOD = "/pyrometer.v1.Ingest/Stream"
AGENT_MAX_IN_FLIGHT = 8  # the agent's ShipperConfig default
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class Tally:
    """Acks of all streams of this process: (ack time, latency s, samples) each."""

    acks: list[tuple[float, float, int]] = field(default_factory=list)
    sent: int = 0
    acked_samples: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class Stream:
    """One agent: its call, and the send times of its unacknowledged batches."""

    index: int
    channel: grpc.aio.Channel
    call: Any
    pending: deque[tuple[float, int, int]] = field(default_factory=deque)  # (sent, seq, samples)
    next_seq: int = 1


def open_stream(address: str, index: int) -> Stream:
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
               # one TCP connection per agent, as separate agent processes would have
               ("grpc.use_local_subchannel_pool", 1)]
    channel = grpc.aio.insecure_channel(address, options=options, compression=grpc.Compression.Gzip)
    # no request serializer: the batches are already bytes
    multi = channel.stream_stream(METHOD, request_serializer=None,
                                  response_deserializer=ingest_pb2.Ack.FromString)
    return Stream(index, channel, multi())


async def send(stream: Stream, batches: Batches, tally: Tally) -> None:
    seq = stream.next_seq
    stream.next_seq += 1
    data = batches.encode(stream.index, seq)
    stream.pending.append((time.monotonic(), seq, batches.samples(seq)))
    tally.sent += 1
    await stream.call.write(data)


async def receive(stream: Stream, tally: Tally) -> bool:
    """Wait for the next ack; False at the end of the stream."""
    ack = await stream.call.read()
    if ack is grpc.aio.EOF:
        return False
    sent, seq, samples = stream.pending.popleft()
    if ack.seq != seq:
        raise RuntimeError(f"stream {stream.index}: ack for seq {ack.seq}, expected {seq}")
    now = time.monotonic()
    tally.acks.append((now, now - sent, samples))
    tally.acked_samples += samples
    tally.duplicates += ack.duplicate
    return True


async def first_batch(stream: Stream, batches: Batches, tally: Tally) -> None:
    await send(stream, batches, tally)
    if not await receive(stream, tally):
        raise RuntimeError(f"stream {stream.index} ended before its first ack")


async def run_stream(stream: Stream, batches: Batches, plan: dict[str, Any], go: dict[str, float],
                     tally: Tally) -> None:
    """Send until go["stop"], then half-close and read every outstanding ack."""
    paced = plan["mode"] == "paced"
    window = asyncio.Semaphore(AGENT_MAX_IN_FLIGHT if paced else plan["in_flight"])
    phase = random.Random(stream.index).uniform(0, plan["period_s"]) if paced else 0.0
    last = plan.get("batches") or sys.maxsize  # a fill: this many batches a stream, then stop

    async def writer() -> None:
        await asyncio.sleep(max(0.0, go["start"] + phase - time.monotonic()))
        due = go["start"] + phase
        while True:
            await window.acquire()
            if time.monotonic() >= go["stop"] or stream.next_seq > last:
                break
            await send(stream, batches, tally)
            if paced:
                due += plan["period_s"]
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        await stream.call.done_writing()

    task = asyncio.create_task(writer())
    try:
        while await receive(stream, tally):
            window.release()
        await task
    except grpc.aio.AioRpcError as err:
        tally.errors.append(f"stream {stream.index}: {err.code().name} {err.details()}")
        task.cancel()
    except Exception as exc:  # a broken stream must not hide the others' figures
        tally.errors.append(f"stream {stream.index}: {exc!r}")
        task.cancel()
    finally:
        await stream.channel.close()


def summary(tally: Tally, go: dict[str, float]) -> dict[str, Any]:
    """Acks counted in [go["from"], go["to"]), and the totals for the loss check."""
    counted = [(lat, n) for at, lat, n in tally.acks if go["from"] <= at < go["to"]]
    return {
        "batches": len(counted), "samples": sum(n for _, n in counted),
        "latencies_ms": [round(lat * 1000, 3) for lat, _ in counted],
        "sent_total": tally.sent, "acked_total": len(tally.acks),
        "acked_samples_total": tally.acked_samples, "duplicates": tally.duplicates,
        "errors": tally.errors,
    }


async def main() -> None:
    plan = json.loads(sys.stdin.readline())
    batches = Batches.build(plan["base_ns"], plan["run_id"], services=plan.get("services", SERVICES),
                            current=plan.get("current", False),
                            request_rate=plan.get("request_rate", REQUEST_RATE))
    tally = Tally()
    began = time.monotonic()
    addresses = plan["addresses"]
    streams = [open_stream(addresses[i % len(addresses)], i)
               for i in range(plan["first_stream"], plan["first_stream"] + plan["streams"])]
    await asyncio.gather(*(first_batch(s, batches, tally) for s in streams))
    ready = {"setup_s": time.monotonic() - began, "first_batch_bytes": len(batches.encode(0, 1)),
             "steady_batch_bytes": len(batches.encode(0, 2))}
    print("ready " + json.dumps(ready), flush=True)
    line = await asyncio.to_thread(sys.stdin.readline)
    go = json.loads(line.removeprefix("go "))
    await asyncio.gather(*(run_stream(s, batches, plan, go, tally) for s in streams))
    print("result " + json.dumps(summary(tally, go)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
