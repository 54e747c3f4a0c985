"""The demo model server and load generator, run as real processes on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from support.demo_servers import DEMO, load_demo_module, running_demo

pytestmark = pytest.mark.integration

READY_PREFIX = "model-server listening on "
loadgen = load_demo_module("loadgen")


@contextmanager
def running_server(tmp_path: Path, env: Mapping[str, str], *args: str) -> Iterator[str]:
    """The demo model server on a free port; its base URL; SIGTERM and rc 0 at the end."""
    with running_demo(tmp_path, "model_server.py", READY_PREFIX, env, *args) as url:
        yield url


def _call(url: str, body: Any = None, method: str | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _words(n: int) -> str:
    return " ".join(loadgen.WORDS[i % len(loadgen.WORDS)] for i in range(n))


def test_predict_health_info_and_load(tmp_path: Path) -> None:
    with running_server(tmp_path, {"APP_VERSION": "1.4.2"}, "--workers", "2") as url:
        assert _call(f"{url}/healthz") == (200, {"status": "ok"})
        status, info = _call(f"{url}/v1/info")
        assert status == 200 and info["version"] == "1.4.2" and info["workers"] == 2
        assert info["functions"] == {"forward": "model_forward", "postprocess": "postprocess_render_json"}
        assert info["switches"]["slow_forward"] is False

        for n_words, top_k in ((5, 3), (300, 5)):
            status, body = _call(f"{url}/v1/predict", {"text": _words(n_words), "top_k": top_k})
            assert status == 200
            assert body["tokens"] == n_words + 1 and body["version"] == "1.4.2"
            scores = [entry["score"] for entry in body["labels"]]
            assert len(scores) == top_k and scores == sorted(scores, reverse=True)
            assert all(0 < s <= 1 for s in scores) and sum(scores) <= 1 + 1e-6
            assert _call(f"{url}/v1/predict", {"text": _words(n_words), "top_k": top_k})[1] == body

        _, long = _call(f"{url}/v1/predict", {"text": _words(2000)})
        assert long["tokens"] == 512  # truncated to --max-tokens
        assert _call(f"{url}/v1/predict", {"txt": "x"})[0] == 400
        assert _call(f"{url}/v1/predict", method="GET")[0] == 405
        assert _call(f"{url}/nowhere")[0] == 404

        served_before = _call(f"{url}/v1/info")[1]["stats"]["served"]
        summary = loadgen.run_load(url, rate=20, duration=1.5, text_words=16, senders=4)
        assert summary.sent >= 10 and summary.ok + summary.errors == summary.sent
        assert summary.errors == 0 and summary.error_kinds == {}
        assert summary.p50_ms is not None and summary.p99_ms is not None
        assert 0 < summary.p50_ms <= summary.p99_ms <= summary.max_ms
        assert _call(f"{url}/v1/info")[1]["stats"]["served"] == served_before + summary.ok


def test_switches_change_the_code_path_not_the_answer(tmp_path: Path) -> None:
    text = _words(40)
    with running_server(tmp_path, {}) as url:
        _, plain = _call(f"{url}/v1/predict", {"text": text, "debug": True})
    assert plain["debug"]["forward"] == "model_forward"
    assert plain["debug"]["postprocess"] == "postprocess_render_json"

    slowdown = tmp_path / "slowdown"
    slowdown.write_text("3\n")
    env = {
        "APP_VERSION": "2.0.0",
        "DEMO_SLOW_VERSIONS": "1.9.9, 2.0.0",
        "DEMO_COSTLY_POSTPROCESS": "1",
        "DEMO_SLOWDOWN_FILE": str(slowdown),
    }
    with running_server(tmp_path, env) as url:
        _, info = _call(f"{url}/v1/info")
        _, switched = _call(f"{url}/v1/predict", {"text": text, "debug": True})
    assert info["functions"] == {
        "forward": "model_forward_slow",
        "postprocess": "postprocess_render_json_costly",
    }
    assert info["switches"]["slowdown_factor"] == 3.0
    assert switched["debug"]["forward"] == "model_forward_slow"
    assert switched["debug"]["slowdown_factor"] == 3.0
    # Same weights, same answer: the slow path is a cost regression, not a model change.
    for a, b in zip(plain["labels"], switched["labels"], strict=True):
        assert a["label"] == b["label"] and a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert len(b["explanation"]) == 3 and {"word", "weight"} <= set(b["explanation"][0])


def test_loadgen_cli_reports_a_summary_line(tmp_path: Path) -> None:
    with running_server(tmp_path, {}) as url:
        result = subprocess.run(
            [sys.executable, str(DEMO / "loadgen.py"), "--url", url, "--rate", "50",
             "--duration", "5", "--max-requests", "8", "--size-dist", "fixed"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ready, summary_line = result.stdout.strip().splitlines()
    assert ready.startswith("loadgen started: ")
    summary = json.loads(summary_line)
    assert summary["sent"] == 8 and summary["ok"] == 8 and summary["errors"] == 0
    assert summary["mean_words"] == 32.0


def test_flags_file_switches_the_code_path_without_a_restart(tmp_path: Path) -> None:
    flags = tmp_path / "flags"
    flags.write_text("# nothing switched on yet\n")
    with running_server(tmp_path, {"DEMO_FLAGS_FILE": str(flags)}) as url:
        _, before = _call(f"{url}/v1/predict", {"text": _words(12), "debug": True})
        flags.write_text("costly_postprocess=1\n")
        deadline = time.monotonic() + 10  # the server re-reads the file at most once a second
        while (info := _call(f"{url}/v1/info")[1])["switches"]["costly_postprocess"] is False:
            assert time.monotonic() < deadline, info
            time.sleep(0.1)
        _, after = _call(f"{url}/v1/predict", {"text": _words(12), "debug": True})
    assert before["debug"]["postprocess"] == "postprocess_render_json"
    assert after["debug"]["postprocess"] == "postprocess_render_json_costly"
    assert info["switches"]["flags"] == {"costly_postprocess": True}


def test_loadgen_schedule_changes_rate_and_size_mid_run(tmp_path: Path) -> None:
    schedule = '[{"at": 0.5, "text_words": 64}, {"at": 1.0, "rate": 40}]'
    with running_server(tmp_path, {}) as url:
        result = subprocess.run(
            [sys.executable, str(DEMO / "loadgen.py"), "--url", url, "--rate", "20",
             "--duration", "1.5", "--size-dist", "fixed", "--schedule", schedule],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    steps = [json.loads(line.split(": ", 1)[1]) for line in lines if line.startswith("loadgen step: ")]
    assert [(s["at"], s["rate"], s["text_words"]) for s in steps] == [(0.5, None, 64), (1.0, 40, None)]
    assert 0 < steps[1]["unix"] - steps[0]["unix"] < 1.0
    summary = json.loads(lines[-1])
    assert summary["target_rate"] == 20.0 and 32 < summary["mean_words"] < 64
    with pytest.raises(ValueError):
        loadgen.parse_schedule('[{"rate": 5}]')
