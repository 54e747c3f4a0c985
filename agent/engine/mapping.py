"""Which of a serving engine's Prometheus series Pyrometer keeps, and as what.

Each rule maps one metric family, by the name prometheus-client's parser gives it (a
counter's without its `_total`), to a canonical name of ENGINE_METRICS, with a scale
to the canonical unit (microseconds to seconds, percent to a fraction). A counter that
sums durations ("per") is divided by the counter of the requests it sums over, so a
cumulative microseconds counter becomes a mean per request like a histogram's.

Names and types as documented by each project, in the versions checked:

- vLLM 0.6.x (V0 engine) to 0.11 (V1), docs "Production Metrics" and design/v1/metrics:
  vllm:num_requests_running / _waiting (gauges), vllm:gpu_cache_usage_perc (V0) and
  vllm:kv_cache_usage_perc (V1, 0.10+) (gauges, fraction 0..1),
  vllm:num_preemptions_total, vllm:prompt_tokens_total, vllm:generation_tokens_total,
  vllm:request_success_total (counters), vllm:time_to_first_token_seconds,
  vllm:time_per_output_token_seconds (renamed vllm:inter_token_latency_seconds in 0.11),
  vllm:e2e_request_latency_seconds, vllm:request_queue_time_seconds,
  vllm:request_inference_time_seconds (histograms); label model_name.
- Triton Inference Server r24.04 docs/user_guide/metrics.md: nv_inference_request_success,
  nv_inference_queue_duration_us, nv_inference_compute_infer_duration_us,
  nv_inference_request_duration_us (counters, cumulative microseconds),
  nv_inference_pending_request_count (gauge); labels model, version.
- TorchServe 0.8-0.12 docs/metrics.md (metrics_mode=prometheus, default metrics.yaml):
  ts_inference_requests_total, ts_inference_latency_microseconds,
  ts_queue_latency_microseconds (counters); label model_name.
- Hugging Face TGI 2.x-3.x docs reference/metrics: tgi_queue_size, tgi_batch_current_size
  (gauges), tgi_request_queue_duration, tgi_request_inference_duration, tgi_request_duration,
  tgi_request_mean_time_per_token_duration, tgi_request_input_length,
  tgi_request_generated_tokens (histograms), tgi_request_success (counter); no model label.

Anything else: a JSON mapping file (--scrape-mapping), see `load_mapping`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import ENGINE_METRICS

MODEL_LABELS = ("model_name", "model")  # the one label kept; every other is summed over
_NAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*$")


@dataclass(frozen=True, slots=True)
class Rule:
    source: str  # family name as parsed (counters without _total)
    metric: str  # canonical name
    engine: str
    scale: float = 1.0  # to the canonical unit
    per: str | None = None  # counter of the observations a cumulative sum counter sums over
    reduce: str = "sum"  # gauges of several label sets of one model: "sum" or "max"


_US = 1e-6
KNOWN: tuple[Rule, ...] = (
    Rule("vllm:num_requests_running", "requests_running", "vllm"),
    Rule("vllm:num_requests_waiting", "requests_waiting", "vllm"),
    Rule("vllm:kv_cache_usage_perc", "kv_cache_usage", "vllm", reduce="max"),
    Rule("vllm:gpu_cache_usage_perc", "kv_cache_usage", "vllm", reduce="max"),
    Rule("vllm:num_preemptions", "preemptions", "vllm"),
    Rule("vllm:prompt_tokens", "prompt_tokens", "vllm"),
    Rule("vllm:generation_tokens", "generation_tokens", "vllm"),
    Rule("vllm:request_success", "requests", "vllm"),
    Rule("vllm:time_to_first_token_seconds", "ttft_s", "vllm"),
    Rule("vllm:inter_token_latency_seconds", "itl_s", "vllm"),
    Rule("vllm:time_per_output_token_seconds", "itl_s", "vllm"),
    Rule("vllm:e2e_request_latency_seconds", "e2e_s", "vllm"),
    Rule("vllm:request_queue_time_seconds", "queue_time_s", "vllm"),
    Rule("vllm:request_inference_time_seconds", "compute_time_s", "vllm"),
    Rule("nv_inference_request_success", "requests", "triton"),
    Rule("nv_inference_pending_request_count", "requests_waiting", "triton"),
    Rule("nv_inference_queue_duration_us", "queue_time_s", "triton",
         scale=_US, per="nv_inference_request_success"),
    Rule("nv_inference_compute_infer_duration_us", "compute_time_s", "triton",
         scale=_US, per="nv_inference_request_success"),
    Rule("nv_inference_request_duration_us", "e2e_s", "triton",
         scale=_US, per="nv_inference_request_success"),
    Rule("ts_inference_requests", "requests", "torchserve"),
    Rule("ts_queue_latency_microseconds", "queue_time_s", "torchserve",
         scale=_US, per="ts_inference_requests"),
    Rule("ts_inference_latency_microseconds", "e2e_s", "torchserve",
         scale=_US, per="ts_inference_requests"),
    Rule("tgi_queue_size", "requests_waiting", "tgi"),
    Rule("tgi_batch_current_size", "requests_running", "tgi"),
    Rule("tgi_request_queue_duration", "queue_time_s", "tgi"),
    Rule("tgi_request_inference_duration", "compute_time_s", "tgi"),
    Rule("tgi_request_duration", "e2e_s", "tgi"),
    Rule("tgi_request_mean_time_per_token_duration", "itl_s", "tgi"),
    Rule("tgi_request_input_length", "prompt_tokens", "tgi"),
    Rule("tgi_request_generated_tokens", "generation_tokens", "tgi"),
    Rule("tgi_request_success", "requests", "tgi"),
)


def load_mapping(path: str) -> tuple[Rule, ...]:
    """Rules from a JSON file: {"engine": NAME, "metrics": {FAMILY: {"metric": CANONICAL,
    "scale"?: NUMBER, "per"?: FAMILY, "reduce"?: "sum"|"max"}}}; a ConfigError says what
    is wrong with it."""
    where = f"--scrape-mapping {path}"
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"{where}: cannot read a JSON mapping: {err}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("metrics"), dict):
        raise ConfigError(f'{where}: expected {{"engine": NAME, "metrics": {{FAMILY: {{"metric": ...}}}}}}')
    engine = spec.get("engine", "custom")
    if not isinstance(engine, str) or not 0 < len(engine) <= 64:
        raise ConfigError(f"{where}: engine must be a name of 1-64 characters")
    return tuple(_rule(where, engine, name, entry) for name, entry in spec["metrics"].items())


def _rule(where: str, engine: str, name: str, entry: object) -> Rule:
    if not _NAME.match(name) or not isinstance(entry, dict):
        raise ConfigError(f"{where}: {name!r}: expected a metric name and an object")
    metric, scale, per = entry.get("metric"), entry.get("scale", 1.0), entry.get("per")
    reduce = entry.get("reduce", "sum")
    if metric not in ENGINE_METRICS:
        raise ConfigError(f"{where}: {name!r}: metric must be one of {', '.join(ENGINE_METRICS)}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ConfigError(f"{where}: {name!r}: scale must be a positive number")
    if per is not None and (not isinstance(per, str) or not _NAME.match(per)):
        raise ConfigError(f"{where}: {name!r}: per must be a metric name")
    if reduce not in ("sum", "max"):
        raise ConfigError(f"{where}: {name!r}: reduce must be sum or max")
    return Rule(name.removesuffix("_total"), str(metric), engine, float(scale),
                per.removesuffix("_total") if per else None, str(reduce))
