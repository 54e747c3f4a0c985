"""The HTTP API described in OpenAPI 3.0, served at GET /api/v1/openapi.json.

Written by hand next to the handlers, and kept honest by a test that drives every
operation and parameter described here with generated values against a real server
(tests/test_fuzz_api.py): whatever it sends, the answer is documented and never a 5xx.
Response bodies are described loosely (an object), their fields being documented in
the README and the handlers' docstrings; the error shape is exact.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from pyrometer.collector.render.registry import FORMATS

TIME = ("RFC 3339 (2026-11-28T10:42:00Z), unix seconds, or relative to now "
        "(now, now-15m)")
DURATION = "a number and a unit (ms, s, m, h, d, w), e.g. 10s, 5m, 1h30m"


def _param(name: str, doc: str, *, required: bool = False, schema: dict[str, Any] | None = None
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": doc,
            "schema": schema or {"type": "string"}}


SERVICE = _param("service", "the service name agents report (--service)", required=True)
FROM = _param("from", f"window start, {TIME}; default now-1h")
TO = _param("to", f"window end, {TIME}; default now")
STEP = _param("step", f"bucket length, {DURATION}; default: about 100 buckets")
LABELS = [_param(name, f"only data with this {name}") for name in ("instance", "version", "thread")]
PID = _param("pid", "only samples of this process", schema={"type": "integer"})

# an empty answer also has a `notice` (JSON, HTML, pprof) saying why: the window, or
# which filter matched nothing and the values it could have matched
SAMPLES = {"Pyrometer-Samples": {"description": "samples in the flame graph, whatever its format",
                                 "schema": {"type": "integer", "minimum": 0}},
           "Pyrometer-Resolution": {
               "description": "the coarsest stored resolution the counts were summed from: "
                              "raw, 1m or 1h (rollups of the window's whole minutes or hours; "
                              "the counts are exact either way); a diff gives the target's, "
                              "then the baseline's",
               "schema": {"type": "string"}}}
_ERROR = {"description": "a bad parameter (400) or an unknown service (404)",
          "content": {"application/json": {"schema": {
              "type": "object", "required": ["error"],
              "properties": {"error": {"type": "string"}, "parameter": {"type": "string"}}}}}}
_JSON = {"application/json": {"schema": {"type": "object"}}}


def _get(summary: str, params: list[dict[str, Any]], content: dict[str, Any] | None = None,
         *, errors: tuple[str, ...] = ("400", "404"), headers: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": "OK", "content": content or _JSON}
    if headers:
        ok["headers"] = headers
    responses: dict[str, Any] = {"200": ok}
    responses.update({code: _ERROR for code in errors})
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def _flamegraph_formats() -> dict[str, Any]:
    types = sorted({spec.content_type.split(";")[0] for spec in FORMATS.values()})
    return {t: {"schema": {"type": "string"} if t != "application/json" else {"type": "object"}}
            for t in types}


def _event_body() -> dict[str, Any]:
    return {"type": "object", "required": ["service", "kind"], "additionalProperties": False,
            "properties": {
                "service": {"type": "string"}, "kind": {"type": "string"},
                "version": {"type": "string", "description": "required for kind deploy"},
                "time": {"description": f"{TIME}, or a number of unix seconds; default now",
                         "oneOf": [{"type": "string"}, {"type": "number"}]},
                "attrs": {"type": "object", "additionalProperties": {"type": "string"}}}}


def _page() -> dict[str, Any]:
    """/ and /ui/{path}: the web page and its static files (no token needed)."""
    text = {"schema": {"type": "string"}}
    static = {t: text for t in ("text/html", "text/javascript", "text/css", "application/json",
                                "text/plain", "font/woff2", "image/png", "image/x-icon", "application/wasm",
                                "application/octet-stream")}
    missing = {"description": "no such file", "content": {"text/plain": text}}
    return {
        "/": {"get": {"summary": "the web page", "parameters": [], "responses": {
            "200": {"description": "OK", "content": {"text/html": text}}}}},
        "/ui/{path}": {"get": {
            "summary": "the page's components and vendored libraries",
            "parameters": [{"name": "path", "in": "path", "required": True,
                            "description": "a file under the package's ui/static folder",
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "OK", "content": static}, "400": missing,
                          "404": missing}}},
    }


def _paths() -> dict[str, Any]:
    window = [SERVICE, FROM, TO]
    formats = list(FORMATS)
    return {
        "/healthz": _get("liveness", [], errors=()),
        "/metrics": _get("Prometheus metrics of the collector and the agents' footprint", [],
                         {"text/plain": {"schema": {"type": "string"}}}, errors=()),
        "/api/v1/services": _get("services with profile data", [], errors=()),
        "/api/v1/labels": _get("label values (instance, version, thread, pid, route) of a service's "
                               "data in the window", window, errors=("400",)),
        "/api/v1/flamegraph": _get(
            "merged stacks of the windows whose midpoint is in [from, to)",
            [*window, _param("format", "answer format; default json",
                             schema={"type": "string", "enum": formats}), *LABELS, PID],
            _flamegraph_formats(), headers=SAMPLES),
        "/api/v1/flamegraph/diff": _get(
            "the change between a baseline window and the target window",
            [*window, _param("baseline_from", f"baseline start, {TIME}"),
             _param("baseline_to", f"baseline end, {TIME}"),
             _param("format", "json or html", schema={"type": "string", "enum": ["json", "html"]}),
             _param("per", "normalise each side per second of its window (default) or per request "
                    "that ended in it", schema={"type": "string", "enum": ["second", "request"]}),
             *LABELS, PID],
            {"application/json": {"schema": {"type": "object"}},
             "text/html": {"schema": {"type": "string"}}}, headers=SAMPLES),
        "/api/v1/latency": _get("request latency and sizes per step",
                                [*window, STEP, *LABELS[:2], _param("route", "only this route")]),
        "/api/v1/gpu": _get("GPU readings per GPU per step", [*window, STEP, *LABELS[:2]]),
        "/api/v1/engine": _get("the serving engine's metrics (agent --scrape) per instance, "
                               "engine, model and metric per step: a gauge's average, a "
                               "counter's rate per second, a histogram's mean",
                               [*window, STEP, *LABELS[:2]]),
        "/api/v1/process": _get("target process and host readings per step",
                                [*window, STEP, *LABELS[:2]]),
        "/api/v1/spikes": _get(
            "latency spikes in the window, each with its ranked causes",
            [*window, STEP, _param("baseline", f"trailing baseline, {DURATION}; default 30m"),
             _param("percentile", "p95, p99 or max; default p99")],
            headers={"Pyrometer-Resolution": {
                "description": "what the detector's percentiles were computed from: raw (every "
                               "request) or 10s (the latency sketches, each within 1%: when "
                               "the window and its baseline span an hour or more and step and "
                               "baseline are whole multiples of 10 s, the window's start moved "
                               "back onto the 10 s grid); also the answer's `resolution`",
                "schema": {"type": "string"}}}),
        "/api/v1/stages": _get(
            "the window's samples split into pipeline stages (tokenization, forward pass, "
            "pre- and post-processing, serving framework, waiting, other), each with its "
            "share and time per request", [*window, *LABELS, PID]),
        "/api/v1/requests": _get(
            "the slowest requests of the window, with the W3C trace id each arrived with "
            "(and a link to it with --trace-url)",
            [*window, _param("route", "only this route"), LABELS[0],
             _param("limit", "how many, 1-100; default 20", schema={"type": "integer"})]),
        "/api/v1/cost": _get(
            "per version: requests, p50/p99 latency and busy GPU-seconds per 1000 requests, "
            "and each version against the one before it", window),
        "/api/v1/slos": _get(
            "each latency objective of the --slos file: budget left, burn rates over 5m, 30m, "
            "1h and 6h, and its state (page, ticket, ok)",
            [_param("service", "only this service's objectives"),
             _param("at", f"when the windows end, {TIME}; default now")], errors=("400",)),
        "/api/v1/events": {
            **_get("events of a service in the window", [*window, _param("kind", "only this kind")]),
            "post": {"summary": "record an event (a deploy from CI/CD, say)",
                     "requestBody": {"required": True, "content": {
                         "application/json": {"schema": _event_body()}}},
                     "responses": {"201": {"description": "stored", "content": _JSON},
                                   "400": _ERROR}}},
        "/api/v1/openapi.json": _get("this description", [], errors=()),
        **_page(),
    }


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 description of the collector's HTTP API."""
    return {
        "openapi": "3.0.3",
        "info": {"title": "Pyrometer collector API", "version": "1",
                 "description": "Flame graphs, series, spikes and events of profiled services. "
                                "With --token, send Authorization: Bearer TOKEN."},
        "paths": _paths(),
    }


async def openapi_json(request: web.Request) -> web.Response:
    """GET /api/v1/openapi.json."""
    return web.json_response(openapi_document())
