"""The streamed-token demo server's Prometheus metrics, under vLLM's names and types.

As vLLM documents them (0.6-0.11, "Production Metrics"; the same list as
agent/engine/mapping.py): gauges vllm:num_requests_running, vllm:num_requests_waiting,
vllm:kv_cache_usage_perc (a fraction, 0..1, as vLLM reports it despite the name);
counters vllm:num_preemptions_total, vllm:prompt_tokens_total,
vllm:generation_tokens_total, vllm:request_success_total (labelled finished_reason);
histograms vllm:time_to_first_token_seconds, vllm:time_per_output_token_seconds (one
observation per token after the first), vllm:e2e_request_latency_seconds,
vllm:request_queue_time_seconds (arrival to first scheduled) and
vllm:request_inference_time_seconds (first scheduled to the last token, preempted time
included). Every series carries the label model_name.

Times are the engine's own: from the moment a request reached it, not the HTTP server's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from llm_engine import Sequence

M = TypeVar("M", Counter, Gauge, Histogram)
FINISH_REASONS = ("stop", "length", "abort")
# vLLM's own bucket bounds (seconds), trimmed at the long end
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0)


class EngineMetrics:
    """One registry per server; the engine thread updates it, /metrics renders it."""

    def __init__(self, model: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._model = model
        one = self._one
        self.running = one(Gauge, "vllm:num_requests_running", "Requests in the running batch.")
        self.waiting = one(Gauge, "vllm:num_requests_waiting", "Requests waiting to be scheduled.")
        self.kv_usage = one(Gauge, "vllm:kv_cache_usage_perc", "KV-cache usage (1 means 100 percent).")
        self.preemptions = one(Counter, "vllm:num_preemptions", "Cumulative preemptions.")
        self.prompt_tokens = one(Counter, "vllm:prompt_tokens", "Prefill tokens processed.")
        self.generation_tokens = one(Counter, "vllm:generation_tokens", "Generation tokens processed.")
        self._success = Counter("vllm:request_success", "Successfully processed requests.",
                                ("model_name", "finished_reason"), registry=self.registry)
        for reason in FINISH_REASONS:  # as vLLM does: every series there from the start
            self._success.labels(model, reason)
        self.ttft = one(Histogram, "vllm:time_to_first_token_seconds", "Time to first token.",
                        buckets=TTFT_BUCKETS)
        self.tpot = one(Histogram, "vllm:time_per_output_token_seconds", "Time per output token.",
                        buckets=TPOT_BUCKETS)
        self.e2e = one(Histogram, "vllm:e2e_request_latency_seconds", "End-to-end request latency.",
                       buckets=REQUEST_BUCKETS)
        self.queue = one(Histogram, "vllm:request_queue_time_seconds",
                         "Time spent waiting in the queue.", buckets=REQUEST_BUCKETS)
        self.inference = one(Histogram, "vllm:request_inference_time_seconds",
                             "Time spent running (scheduled to finished).", buckets=REQUEST_BUCKETS)

    def _one(self, kind: type[M], name: str, doc: str, **options: Any) -> M:
        """The family's one series, that of this server's model."""
        return kind(name, doc, ("model_name",), registry=self.registry, **options).labels(self._model)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def gauges(self, running: int, waiting: int, kv_usage: float) -> None:
        self.running.set(running)
        self.waiting.set(waiting)
        self.kv_usage.set(kv_usage)

    def scheduled(self, first: Iterable[Sequence], preempted: int) -> None:
        """Sequences scheduled for the first time (their prompts are counted once, however
        often they are recomputed), and the step's preemptions."""
        for seq in first:
            assert seq.first_scheduled is not None
            self.prompt_tokens.inc(seq.prompt_tokens)
            self.queue.observe(seq.first_scheduled - seq.arrived)
        if preempted:
            self.preemptions.inc(preempted)

    def token(self, seq: Sequence, now: float) -> None:
        self.generation_tokens.inc()
        if seq.last_token is None:
            self.ttft.observe(now - seq.arrived)
        else:
            self.tpot.observe(now - seq.last_token)

    def finished(self, seq: Sequence, now: float) -> None:
        assert seq.first_scheduled is not None
        self._success.labels(self._model, seq.finish_reason or "length").inc()
        self.e2e.observe(now - seq.arrived)
        self.inference.observe(now - seq.first_scheduled)
