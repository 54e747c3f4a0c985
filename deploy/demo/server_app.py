"""The demo model server's WSGI application: routing, the worker bound, the switches.

It is a plain WSGI callable so that a WSGI middleware (Pyrometer's request recorder,
for one) can wrap it without the server knowing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import inference
from serving import BadRequest, PolledFile, StartResponse, dispatch, flag_lines, read_json, reply

NAME = "pyrometer-demo-model"


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Everything the server is configured with, resolved once at startup."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 4
    version: str = "dev"
    slow_versions: frozenset[str] = frozenset()
    slow_forward: bool = False
    costly_postprocess: bool = False
    slowdown_file: str | None = None
    flags_file: str | None = None
    seed: int = 1234
    max_tokens: int = 512
    max_body_bytes: int = 1 << 20

    @property
    def forward_is_slow(self) -> bool:
        return self.slow_forward or self.version in self.slow_versions


class SlowdownKnob(PolledFile[float]):
    """The factor in DEMO_SLOWDOWN_FILE (at least 1): the GPU-throttle simulation."""

    def __init__(self, path: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(path, 1.0, clock)

    def factor(self) -> float:
        return self.value()

    def _parse(self, text: str) -> float:
        return max(1.0, float(text.strip() or "1"))


class FlagsKnob(PolledFile[dict[str, bool]]):
    """Runtime flags from DEMO_FLAGS_FILE: ``name=1`` / ``name=0`` lines, ``#`` comments.

    This is the "code path changed without a deploy" fault: a feature flag flipped in a
    running process. Unknown names are kept (and shown by /v1/info) but select nothing.
    """

    def __init__(self, path: str | None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(path, {}, clock)

    def flag(self, name: str, default: bool) -> bool:
        return self.value().get(name, default)

    def _parse(self, text: str) -> dict[str, bool]:
        flags: dict[str, bool] = {}
        for name, raw in flag_lines(text).items():
            if raw not in _FLAG_VALUES:
                raise ValueError(f"bad flag {name}={raw!r}")  # keeps the whole file out
            flags[name] = _FLAG_VALUES[raw]
        return flags


_FLAG_VALUES = {"1": True, "true": True, "on": True, "0": False, "false": False, "off": False}


def simulated_device_wait(seconds: float) -> None:
    """Where a throttled GPU's longer kernels would keep the host waiting."""
    time.sleep(seconds)


class ModelServerApp:
    """WSGI app for /v1/predict, /v1/info and /healthz."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.weights = inference.build_weights(config.seed)
        self._forward = inference.model_forward_slow if config.forward_is_slow else inference.model_forward
        self._slowdown = SlowdownKnob(config.slowdown_file)
        self._flags = FlagsKnob(config.flags_file)
        self._slots = threading.BoundedSemaphore(config.workers)
        self._lock = threading.Lock()
        self._waiting = self._running = self._served = 0
        self._idle = threading.Condition(self._lock)
        self._routes = {"/v1/predict": ("POST", self._predict_route),
                        "/v1/info": ("GET", lambda _, start: reply(start, "200 OK", self.info()))}

    @property
    def costly_postprocess(self) -> bool:
        """The flags file, when it names the flag, overrides DEMO_COSTLY_POSTPROCESS."""
        return self._flags.flag("costly_postprocess", self.config.costly_postprocess)

    @property
    def postprocess_name(self) -> str:
        return self._postprocess_name(self.costly_postprocess)

    @staticmethod
    def _postprocess_name(costly: bool) -> str:
        fn = inference.postprocess_render_json_costly if costly else inference.postprocess_render_json
        return fn.__name__

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        return dispatch(environ, start_response, self._routes)

    def _predict_route(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        body = read_json(environ, self.config.max_body_bytes)
        return reply(start_response, "200 OK", self.predict(body))

    def predict(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one request through the pipeline, waiting for a worker slot first."""
        text = request.get("text")
        if not isinstance(text, str):
            raise BadRequest("400 Bad Request", 'body needs a "text" string')
        top_k = request.get("top_k", 5)
        if not isinstance(top_k, int) or not 1 <= top_k <= len(inference.LABELS):
            raise BadRequest("400 Bad Request", f"top_k must be 1..{len(inference.LABELS)}")
        queued_at = time.perf_counter()
        with self._lock:
            self._waiting += 1
        self._slots.acquire()
        with self._lock:  # one step from waiting to running, so drain() never sees a gap
            self._waiting -= 1
            self._running += 1
        try:
            started = time.perf_counter()
            body, forward_s, factor, costly = self._pipeline(text, top_k)
        finally:
            self._slots.release()
            with self._idle:
                self._running -= 1
                self._served += 1
                if self._waiting + self._running == 0:
                    self._idle.notify_all()
        body["version"] = self.config.version
        if request.get("debug") is True:
            body["debug"] = {
                "forward": self._forward.__name__,
                "postprocess": self._postprocess_name(costly),
                "slowdown_factor": factor,
                "queue_ms": round((started - queued_at) * 1000, 3),
                "forward_ms": round(forward_s * 1000, 3),
            }
        return body

    def _pipeline(self, text: str, top_k: int) -> tuple[dict[str, Any], float, float, bool]:
        enc = inference.preprocess(text, self.config.max_tokens)
        t0 = time.perf_counter()
        logits = self._forward(self.weights, enc)
        forward_s = time.perf_counter() - t0
        factor = self._slowdown.factor()
        if factor > 1.0:
            simulated_device_wait(forward_s * (factor - 1.0))
        probs = inference.postprocess_softmax(logits)
        costly = self.costly_postprocess  # read once: one request runs one path
        if costly:
            body = inference.postprocess_render_json_costly(probs, enc, self.weights, top_k)
        else:
            body = inference.postprocess_render_json(probs, enc, top_k)
        return body, forward_s, factor, costly

    def info(self) -> dict[str, Any]:
        """Version, switches and the functions they select, and live counters."""
        with self._lock:
            stats = {"waiting": self._waiting, "running": self._running, "served": self._served}
        return {
            "name": NAME,
            "version": self.config.version,
            "workers": self.config.workers,
            "switches": {
                "slow_forward": self.config.forward_is_slow,
                "costly_postprocess": self.costly_postprocess,
                "slowdown_file": self.config.slowdown_file,
                "slowdown_factor": self._slowdown.factor(),
                "flags_file": self.config.flags_file,
                "flags": self._flags.value(),
            },
            "functions": {"forward": self._forward.__name__, "postprocess": self.postprocess_name},
            "stats": stats,
        }

    def drain(self, timeout: float) -> bool:
        """Wait until no prediction is queued or running; False if that took too long."""
        with self._idle:
            return self._idle.wait_for(lambda: self._waiting + self._running == 0, timeout)
