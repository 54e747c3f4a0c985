"""Decoy change events: a deploy and a config change that change nothing, posted through
the events API as a release pipeline would, and (in the full run) a restart of the server
at the same version, reported by the agent, all shortly before the fault.

The deploy names a version that no request carries (the server keeps running 1.0.0) and
the config event names a setting the server never reads; neither is marked as a decoy
anywhere the collector can see, so the analysis has to judge them by what changed after
them, which is nothing. What was posted or done, and when, goes into the run's record.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from scenarios.plan import BASE_VERSION, RunPlan


def body(plan: RunPlan, kind: str, service: str) -> dict[str, Any]:
    """The POST body of one decoy; its time is the collector's clock at arrival."""
    if kind == "deploy":
        return {"service": service, "kind": "deploy",
                "version": f"{BASE_VERSION}+build.{plan.seed % 10_000}",
                "attrs": {"pipeline": "release", "change": "rebuilt image, same code"}}
    return {"service": service, "kind": kind,
            "attrs": {"key": "log_sampling", "from": "0.01", "to": "0.02"}}


def post(api: str, payload: dict[str, Any]) -> int:
    request = urllib.request.Request(f"{api}/api/v1/events", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def post_due(plan: RunPlan, api: str, service: str, anchor: float, until: float,
             stop: threading.Event | None = None,
             restart: Callable[[], None] | None = None) -> list[dict[str, Any]]:
    """Post each decoy at its planned moment that falls before `until` (unix seconds);
    returns what was posted, with the time and the HTTP status. The restart decoy is not
    posted: `restart` restarts the server, and the agent reports it (status None)."""
    posted: list[dict[str, Any]] = []
    for kind, at_s in sorted(plan.decoys.items(), key=lambda item: item[1]):
        due = anchor + at_s
        if due >= until:
            continue
        (stop or threading.Event()).wait(max(0.0, due - time.time()))
        if kind == "restart":
            if restart is None:
                raise ValueError("a restart decoy is planned but nothing can restart the server")
            restart()
            posted.append({"kind": kind, "time": time.time(), "status": None, "version": None})
            continue
        payload = body(plan, kind, service)
        status = post(api, payload)
        posted.append({"kind": kind, "time": time.time(), "status": status,
                       "version": payload.get("version")})
    return posted
