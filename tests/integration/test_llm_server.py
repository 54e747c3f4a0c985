"""The streamed-token demo server (deploy/demo/llm_server.py) as a real process on 127.0.0.1:
its stream, its vLLM-named metrics as the agent reads them, and its runtime limits."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyrometer.agent.engine.convert import Converter
from pyrometer.agent.engine.mapping import KNOWN
from support.demo_servers import DEMO, running_demo

pytestmark = pytest.mark.integration

READY_PREFIX = "llm-server listening on "
WAIT_S = 30.0  # generous: a busy two-core host runs the engine thread late


@contextmanager
def llm_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    flags = tmp_path / "flags"
    flags.write_text("")
    with running_demo(tmp_path, "llm_server.py", READY_PREFIX,
                      {"DEMO_FLAGS_FILE": str(flags)}) as url:
        yield url, flags


def _post(url: str, body: bytes, method: str = "POST") -> tuple[int, list[tuple[float, bytes]]]:
    """Status, and each line of the body with the time it arrived."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT_S)
    try:
        conn.request(method, "/v1/generate", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        lines = []
        while line := response.readline():
            lines.append((time.monotonic(), line))
        return response.status, lines
    finally:
        conn.close()


def _generate(url: str, words: int, max_tokens: int) -> list[dict[str, Any]]:
    prompt = " ".join(["ticket"] * words)
    status, lines = _post(url, json.dumps({"prompt": prompt, "max_tokens": max_tokens}).encode())
    assert status == 200
    return [json.loads(line) for _, line in lines]


def _metrics(url: str) -> tuple[str, dict[str, float]]:
    """The exposition, and each sample's value summed over its labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=WAIT_S) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return text, values


def _wait_for(url: str, what: str, test: Callable[[dict[str, float]], bool]) -> dict[str, float]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        _, values = _metrics(url)
        if test(values):
            return values
        time.sleep(0.05)  # a polling interval, not a wait for something to have happened
    pytest.fail(f"{what}: not seen within {WAIT_S}s; last {values}")


def _wait_for_limit(url: str, name: str, value: int) -> None:
    """Until the server has read the flags file (at most once a second)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/v1/info", timeout=WAIT_S) as response:
            if json.loads(response.read())["engine"][name] == value:
                return
        time.sleep(0.05)
    pytest.fail(f"{name}={value} not read within {WAIT_S}s")


def _in_background(url: str, n: int, words: int, max_tokens: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=_generate, args=(url, words, max_tokens), daemon=True)
               for _ in range(n)]
    for thread in threads:
        thread.start()
    return threads


def test_streams_one_line_per_token_as_it_is_produced(tmp_path: Path) -> None:
    with llm_server(tmp_path) as (url, _):
        status, lines = _post(url, json.dumps({"prompt": "where is my order", "max_tokens": 6})
                              .encode())
        assert status == 200
        body = [json.loads(line) for _, line in lines]
        assert [b["index"] for b in body[:-1]] == list(range(6))
        assert all(isinstance(b["text"], str) and b["text"] for b in body[:-1])
        assert body[-1] == {"finish_reason": "length", "prompt_tokens": 4, "generated_tokens": 6,
                            "preemptions": 0}
        # six engine steps of at least 8 ms each: the tokens came one by one, not at the end
        assert lines[5][0] - lines[0][0] >= 0.03


def test_metrics_parse_and_the_agent_reads_them(tmp_path: Path) -> None:
    with llm_server(tmp_path) as (url, _):
        converter = Converter(KNOWN, 1.0)
        text, values = _metrics(url)
        first = {r.metric: r for r in converter.convert(text, time.time_ns())}
        assert {"requests_running", "requests_waiting", "kv_cache_usage"} <= set(first)
        assert {r.engine for r in first.values()} == {"vllm"}
        assert {r.model for r in first.values()} == {"pyrometer-demo-llm"}
        for _ in range(3):
            _generate(url, words=7, max_tokens=5)
        text, values = _metrics(url)
        assert values["vllm:prompt_tokens_total"] == 21
        assert values["vllm:generation_tokens_total"] == 15
        assert values["vllm:request_success_total"] == 3
        assert values["vllm:time_per_output_token_seconds_count"] == 12
        later = {r.metric: r for r in converter.convert(text, time.time_ns() + 1)}
        assert later["prompt_tokens"].value == 21 and later["requests"].value == 3
        for metric in ("ttft_s", "e2e_s", "queue_time_s", "compute_time_s", "itl_s"):
            assert later[metric].count > 0 and later[metric].value > 0, metric
        assert later["e2e_s"].value >= later["compute_time_s"].value
        assert later["preemptions"].value == 0


def test_a_cut_batch_limit_makes_requests_wait(tmp_path: Path) -> None:
    with llm_server(tmp_path) as (url, flags):
        flags.write_text("max_num_seqs=1\n")
        _wait_for_limit(url, "max_num_seqs", 1)
        threads = _in_background(url, 5, words=4, max_tokens=60)
        seen = _wait_for(url, "one running, the rest waiting",
                         lambda v: v["vllm:num_requests_running"] == 1
                         and v["vllm:num_requests_waiting"] >= 3)
        assert seen["vllm:num_preemptions_total"] == 0
        flags.write_text("max_num_seqs=8\n")  # room again: all of them run at once
        _wait_for(url, "the queue emptied into the batch",
                  lambda v: v["vllm:num_requests_waiting"] == 0 and v["vllm:num_requests_running"] >= 2)
        for thread in threads:
            thread.join(WAIT_S)
        _wait_for(url, "all done", lambda v: v["vllm:request_success_total"] == 5)


def test_a_cut_kv_cache_runs_full_and_preempts(tmp_path: Path) -> None:
    with llm_server(tmp_path) as (url, flags):
        _, before = _metrics(url)
        assert before["vllm:kv_cache_usage_perc"] == 0
        # 4 blocks of 16 tokens: two prompts of 20 words (2 blocks each) fill it, and the
        # first token past 32 needs a third block that is not there
        flags.write_text("kv_blocks=4\n")
        _wait_for_limit(url, "kv_blocks", 4)
        threads = _in_background(url, 3, words=20, max_tokens=40)
        _wait_for(url, "the cache full", lambda v: v["vllm:kv_cache_usage_perc"] >= 0.99)
        _wait_for(url, "preemptions", lambda v: v["vllm:num_preemptions_total"] >= 1)
        for thread in threads:
            thread.join(WAIT_S)
        done = _wait_for(url, "all done", lambda v: v["vllm:request_success_total"] == 3)
        # recomputed sequences are counted once in the prompt tokens
        assert done["vllm:prompt_tokens_total"] == 60
        assert done["vllm:generation_tokens_total"] == 120


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", b"{}", json.dumps({"prompt": "   "}).encode(),
    json.dumps({"prompt": 7}).encode(), json.dumps({"prompt": "hi", "max_tokens": 0}).encode(),
    json.dumps({"prompt": "hi", "max_tokens": "5"}).encode(),
    json.dumps({"prompt": "hi", "max_tokens": True}).encode(),
    json.dumps({"prompt": "hi " * 4090, "max_tokens": 10}).encode(),
])  # fmt: skip
def test_bad_bodies_get_400_and_change_nothing(tmp_path: Path, body: bytes) -> None:
    with llm_server(tmp_path) as (url, _):
        _, before = _metrics(url)
        status, lines = _post(url, body)
        assert status == 400 and "error" in json.loads(lines[0][1])
        _, after = _metrics(url)
        for name in ("vllm:prompt_tokens_total", "vllm:num_requests_running",
                     "vllm:num_requests_waiting", "vllm:e2e_request_latency_seconds_count",
                     "vllm:request_success_total"):
            assert after[name] == before[name] == 0, name
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/v1/generate", timeout=WAIT_S)
        assert err.value.code == 405


def test_the_load_generator_streams_generations_and_shifts_prompts(tmp_path: Path) -> None:
    with llm_server(tmp_path) as (url, _):
        schedule = json.dumps([{"at": 1.0, "text_words": 40}])
        done = subprocess.run(
            [sys.executable, str(DEMO / "loadgen.py"), "--url", url, "--endpoint", "generate",
             "--max-tokens", "4", "--rate", "20", "--duration", "2", "--text-words", "5",
             "--size-dist", "fixed", "--arrival", "uniform", "--schedule", schedule],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        lines = done.stdout.splitlines()
        assert lines[0].startswith("loadgen started") and lines[1].startswith("loadgen step: ")
        summary = json.loads(lines[-1])
        sent = summary["sent"]
        assert 38 <= sent == summary["ok"] and summary["errors"] == 0
        assert 5 < summary["mean_words"] < 40  # half the prompts of 5 words, half of 40
        _, values = _metrics(url)
        assert values["vllm:prompt_tokens_total"] == round(summary["mean_words"] * sent)
        assert values["vllm:generation_tokens_total"] == sent * 4
