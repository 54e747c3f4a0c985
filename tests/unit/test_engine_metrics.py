"""Engine expositions (tests/fixtures/engine) to canonical readings, junk, and mapping files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pyrometer.agent.engine.convert import Converter, ExpositionError
from pyrometer.agent.engine.mapping import KNOWN, load_mapping
from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.shared.model import EngineReading

FIXTURES = Path(__file__).parent.parent / "fixtures" / "engine"
S = 1_000_000_000
T0 = 1_750_000_000 * S


def later(text: str, factor: float = 2.0) -> str:
    """The same exposition with every counter and histogram value times `factor`: a scrape
    whose increase over `text` equals `text`'s values (factor 2), gauges unchanged."""
    out, kind = [], ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            kind = line.split()[3]
        elif line and not line.startswith("#") and kind != "gauge":
            name, value = line.rsplit(" ", 1)
            line = f"{name} {float(value) * factor}"
        out.append(line)
    return "\n".join(out) + "\n"


def two_scrapes(name: str) -> dict[tuple[str, str], EngineReading]:
    text = (FIXTURES / name).read_text()
    converter = Converter(KNOWN, 5.0)
    first = converter.convert(text, T0)
    assert {r.metric for r in first} <= {"requests_running", "requests_waiting",
                                         "kv_cache_usage"}, "first scrape: gauges only"
    return {(r.metric, r.model): r for r in converter.convert(later(text), T0 + 10 * S)}


def mean(r: EngineReading) -> float:
    return r.value / r.count


def test_vllm_histograms_counters_and_gauges() -> None:
    got = two_scrapes("vllm-0.10.prom")
    model = "meta-llama/Llama-3.1-8B-Instruct"
    assert {m for m, _ in got} == {"requests_running", "requests_waiting", "kv_cache_usage",
                                   "preemptions", "prompt_tokens", "generation_tokens",
                                   "requests", "ttft_s", "itl_s", "e2e_s", "queue_time_s",
                                   "compute_time_s"}
    assert {mo for _, mo in got} == {model}
    assert got[("kv_cache_usage", model)].value == pytest.approx(0.42)  # the V1 name wins
    assert got[("requests_running", model)].value == 12
    assert got[("requests", model)].value == 100  # finished_reason summed over
    assert got[("preemptions", model)].value == 4
    assert got[("prompt_tokens", model)].value == 51200
    assert mean(got[("queue_time_s", model)]) == pytest.approx(0.2)
    assert mean(got[("ttft_s", model)]) == pytest.approx(0.15)
    assert mean(got[("itl_s", model)]) == pytest.approx(0.02)
    assert got[("queue_time_s", model)].interval_s == pytest.approx(10.0)
    assert all(r.engine == "vllm" for r in got.values())


def test_triton_microsecond_counters_become_means_per_request() -> None:
    got = two_scrapes("triton-24.04.prom")
    assert mean(got[("queue_time_s", "resnet50")]) == pytest.approx(0.002)
    assert mean(got[("compute_time_s", "resnet50")]) == pytest.approx(0.006)
    assert mean(got[("e2e_s", "bert")]) == pytest.approx(0.02)
    assert got[("requests_waiting", "resnet50")].value == 7
    assert got[("requests", "bert")].value == 50
    assert not any(m == "kv_cache_usage" for m, _ in got)


def test_torchserve_and_tgi() -> None:
    ts = two_scrapes("torchserve-0.12.prom")
    assert mean(ts[("queue_time_s", "mnist")]) == pytest.approx(0.01)
    assert mean(ts[("e2e_s", "mnist")]) == pytest.approx(0.05)
    tgi = two_scrapes("tgi-3.0.prom")
    assert tgi[("requests_waiting", "")].value == 5
    assert tgi[("requests_running", "")].value == 32
    assert mean(tgi[("queue_time_s", "")]) == pytest.approx(0.2)
    assert mean(tgi[("prompt_tokens", "")]) == pytest.approx(500)  # tokens per request


def test_counter_reset_counts_from_zero() -> None:
    text = (FIXTURES / "vllm-0.10.prom").read_text()
    converter = Converter(KNOWN, 5.0)
    converter.convert(later(text, 10), T0)
    got = {r.metric: r for r in converter.convert(text, T0 + 5 * S)}  # engine restarted
    assert got["preemptions"].value == 4


@pytest.mark.parametrize("junk", ["<html><body>502 Bad Gateway</body></html>",
                                  "vllm:num_requests_running{model_name=\"m\" 3",
                                  "a b c d e", "\x00\xff\x01"])
def test_junk_is_an_error_and_changes_nothing(junk: str) -> None:
    text = (FIXTURES / "vllm-0.10.prom").read_text()
    converter = Converter(KNOWN, 5.0)
    converter.convert(text, T0)
    with pytest.raises(ExpositionError):
        converter.convert(junk, T0 + 5 * S)
    got = {r.metric: r for r in converter.convert(later(text), T0 + 10 * S)}
    assert got["preemptions"].value == 4 and got["preemptions"].interval_s == pytest.approx(10)


def test_models_beyond_the_bound_are_dropped_and_counted() -> None:
    text = "# TYPE vllm:num_requests_waiting gauge\n" + "".join(
        f'vllm:num_requests_waiting{{model_name="m{i}"}} {i}\n' for i in range(40))
    converter = Converter(KNOWN, 5.0, max_models=16)
    assert len(converter.convert(text, T0)) == 16
    assert converter.dropped_models == 24


def test_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "engine.json"
    path.write_text(json.dumps({"engine": "sglang", "metrics": {
        "sglang:num_queue_reqs": {"metric": "requests_waiting"},
        "sglang:queue_time_ms_total": {"metric": "queue_time_s", "scale": 0.001,
                                       "per": "sglang:num_requests_total"}}}))
    rules = (*load_mapping(str(path)), *KNOWN)
    text = ("# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs 9\n"
            "# TYPE sglang:queue_time_ms counter\nsglang:queue_time_ms_total 500\n"
            "# TYPE sglang:num_requests counter\nsglang:num_requests_total 10\n")
    converter = Converter(rules, 5.0)
    converter.convert(text, T0)
    got = {r.metric: r for r in converter.convert(later(text), T0 + 5 * S)}
    assert got["requests_waiting"].value == 9 and got["requests_waiting"].engine == "sglang"
    assert mean(got["queue_time_s"]) == pytest.approx(0.05)


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read"),
    (json.dumps({"metrics": {"x": {"metric": "nonsense"}}}), "metric must be one of"),
    (json.dumps({"metrics": {"x": {"metric": "requests", "scale": -1}}}), "scale"),
    (json.dumps({"metrics": {"bad name": {"metric": "requests"}}}), "expected a metric name"),
    (json.dumps([1, 2]), "expected"),
])
def test_bad_mapping_file_says_what_is_wrong(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "engine.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_mapping(str(path))
