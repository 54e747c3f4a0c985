"""The streamed-token demo server's WSGI application: /v1/generate, /metrics, /v1/info,
/healthz, and the runtime limits read from the flags file.

A plain WSGI callable, so Pyrometer's WSGI middleware can wrap it (llm_server.py does when
PYROMETER_REQUESTS_ADDR is set); each generation reports its prompt's token count with
record_size, as an LLM endpoint would report tokens rather than bytes.
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from llm_engine import Engine, Limits, Sequence
from llm_metrics import EngineMetrics
from prometheus_client import CONTENT_TYPE_LATEST
from serving import BadRequest, PolledFile, StartResponse, dispatch, flag_lines, read_json, reply

try:  # the demo runs without Pyrometer installed too; then sizes are simply not reported
    from pyrometer.agent.middleware import record_size
except ImportError:  # pragma: no cover
    def record_size(size: int) -> bool:
        return False

MODEL = "pyrometer-demo-llm"
LIMIT_FLAGS = ("max_num_seqs", "kv_blocks")
VOCAB = ("the", "order", "was", "shipped", "today", "and", "should", "arrive", "within",
         "three", "days", "please", "check", "your", "email", "for", "tracking", "details",
         "thanks", "again")  # fmt: skip


@dataclass(frozen=True, slots=True)
class LlmConfig:
    """Everything the server is configured with, resolved once at startup."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_num_seqs: int = 64
    kv_blocks: int = 1024
    max_model_len: int = 4096  # prompt tokens + max_tokens, at most
    flags_file: str | None = None
    version: str = "dev"


class LimitsKnob(PolledFile[dict[str, int]]):
    """``max_num_seqs=N`` and ``kv_blocks=N`` lines of DEMO_FLAGS_FILE (N at least 1);
    other names are left to whoever reads them, a bad value keeps the whole file out."""

    def __init__(self, path: str | None) -> None:
        super().__init__(path, {})

    def limits(self, config: LlmConfig) -> Limits:
        flags = self.value()
        return Limits(flags.get("max_num_seqs", config.max_num_seqs),
                      flags.get("kv_blocks", config.kv_blocks))

    def _parse(self, text: str) -> dict[str, int]:
        out = {}
        for name, raw in flag_lines(text).items():
            if name in LIMIT_FLAGS:
                value = int(raw)
                if value < 1:
                    raise ValueError(f"{name}={value}: must be at least 1")
                out[name] = value
        return out


class LlmApp:
    """WSGI app for POST /v1/generate, GET /metrics, /v1/info and /healthz."""

    def __init__(self, config: LlmConfig) -> None:
        self.config = config
        self._knob = LimitsKnob(config.flags_file)
        self.metrics = EngineMetrics(MODEL)
        self.engine = Engine(lambda: self._knob.limits(config), self.metrics)
        self._idle = threading.Condition()
        self._streams = 0
        self._routes = {
            "/v1/generate": ("POST", lambda env, start: self.generate(read_json(env), start)),
            "/metrics": ("GET", self._metrics_route),
            "/v1/info": ("GET", lambda _, start: reply(start, "200 OK", self.info())),
        }
        self.engine.start()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return dispatch(environ, start_response, self._routes)

    def _metrics_route(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        data = self.metrics.render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST),
                                  ("Content-Length", str(len(data)))])
        return [data]

    def generate(self, request: dict[str, Any], start_response: StartResponse) -> _Stream:
        """Queue one generation; the response streams a JSON line per token as the engine
        produces it, then one line with the finish reason."""
        prompt, max_tokens = request.get("prompt"), request.get("max_tokens", 16)
        if not isinstance(prompt, str) or not prompt.split():
            raise BadRequest("400 Bad Request", 'body needs a "prompt" string of at least one word')
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise BadRequest("400 Bad Request", '"max_tokens" must be a whole number >= 1')
        prompt_tokens = len(prompt.split())  # tokens: whitespace-separated words
        if prompt_tokens + max_tokens > self.config.max_model_len:
            raise BadRequest("400 Bad Request", f"prompt tokens + max_tokens over "
                             f"max_model_len {self.config.max_model_len}")
        record_size(prompt_tokens)
        with self._idle:
            self._streams += 1
        seq = self.engine.submit(prompt_tokens, max_tokens)
        start_response("200 OK", [("Content-Type", "application/x-ndjson")])
        return _Stream(seq, zlib.crc32(prompt.encode()), self._closed)

    def _closed(self, seq: Sequence) -> None:
        """A stream ended, whole or not (the client went away): the engine drops it."""
        self.engine.abort(seq)
        with self._idle:
            self._streams -= 1
            self._idle.notify_all()

    def info(self) -> dict[str, Any]:
        return {"name": MODEL, "version": self.config.version,
                "defaults": {"max_num_seqs": self.config.max_num_seqs,
                             "kv_blocks": self.config.kv_blocks,
                             "max_model_len": self.config.max_model_len},
                "flags_file": self.config.flags_file, "engine": self.engine.stats()}

    def drain(self, timeout: float) -> bool:
        """Wait until no stream is open; False if that took too long. Then stop the engine."""
        with self._idle:
            done = self._idle.wait_for(lambda: self._streams == 0, timeout)
        self.engine.stop()
        return done


class _Stream:
    """The response body: a JSON line per token as the engine produces it, then one with
    the finish reason. close() (which the WSGI server always calls, also when the client
    went away mid-stream) tells the app once."""

    def __init__(self, seq: Sequence, seed: int, closed: Callable[[Sequence], None]) -> None:
        self._seq, self._seed, self._closed = seq, seed, closed
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        seq = self._seq
        while (index := seq.outbox.get()) is not None:
            word = VOCAB[(self._seed + index * 7) % len(VOCAB)]
            yield json.dumps({"index": index, "text": word}).encode() + b"\n"
        yield json.dumps({"finish_reason": seq.finish_reason, "prompt_tokens": seq.prompt_tokens,
                          "generated_tokens": seq.generated,
                          "preemptions": seq.preemptions}).encode() + b"\n"

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._closed(self._seq)
