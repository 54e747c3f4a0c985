"""One evaluation run: the real collector, demo server, agent and load, one fault.

The processes are started exactly as a user would start them (procs.start waits for
each one's ready line). The run's clock is anchored when the agent reports it is
profiling, which is also when its GPU replay starts, so the generated recording and the
server's simulated slowdown share one timeline. After the load ends the agent is stopped
(it ships its last window) and the collector's spike analysis is asked about the run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrometer.collector.demo import last_json_line
from pyrometer.collector.procs import Child, python_env, start
from scenarios import cotenant, decoys, faults, gpu_sim
from scenarios.plan import (
    BASE_VERSION,
    BASE_WORDS,
    LLM_MAX_TOKENS,
    LLM_WORDS,
    WORKERS,
    RunPlan,
    Timing,
)

CLI = [sys.executable, "-m", "pyrometer.agent.cli"]
SERVICE = "rca-demo"
GC_PAUSE_DIR = Path(__file__).resolve().parent / "gcpause"
GC_SEED_VAR = "PYROMETER_RCA_GC_SEED"  # as gcpause/sitecustomize.py reads it
READY_TIMEOUT_S = 90.0  # a busy two-core host starts Python processes slowly
# the engine's metrics once a second (the agent's default is 5 s): compressed scenario time
# is analysed in 2 s steps, each of which should hold a scrape or two
SCRAPE_INTERVAL_S = 1


@dataclass(frozen=True, slots=True)
class Settings:
    """How the stack is run and queried; the defaults suit compressed scenario time."""

    window_s: float = 2.0
    # the percentile a step's requests can carry: compressed time cuts 2 s steps of about
    # 80 requests, whose p99 is their slowest one (a preemption or a GC pause), not a tail
    percentile: str = "p95"
    slack_s: float = 10.0  # a spike that starts this long after the fault ended still counts


def _free_port(kind: int) -> int:
    # a port the kernel just handed out is free; the child binds it a moment later
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    """python_env without inherited demo switches, which would change the server's path."""
    env = {k: v for k, v in python_env(**extra).items()
           if not k.startswith(("DEMO_", "APP_")) or k in extra}
    return env


class Stack:
    """The processes of one run, and the files through which faults reach the server."""

    def __init__(self, workdir: Path, plan: RunPlan, settings: Settings, tag: str | None = None,
                 instance: str | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.logs = workdir
        self.instance = instance  # the agent's --instance; None: its default (the host name)
        self.settings = settings
        self.flags_file = workdir / "flags"
        self.slowdown_file = workdir / "slowdown"
        self.flags_file.write_text("")
        self.slowdown_file.write_text("1\n")
        # on the server's command line: what --match finds. Two instances get tags of one
        # length that differ in the last digit, so neither pattern matches the other server.
        self.tag = tag or str(plan.seed)
        self.port = _free_port(socket.SOCK_STREAM)
        self.requests_addr = f"127.0.0.1:{_free_port(socket.SOCK_DGRAM)}"
        self.children: list[Child] = []
        self.gc_pauses = plan.noise
        # the LLM scenarios run the streamed-token server and scrape its engine metrics
        self.llm = plan.llm
        self.script = "llm_server.py" if plan.llm else "model_server.py"
        self.server: Child | None = None
        self.agent: Child | None = None
        self._restarts = 0

    def start_collector(self) -> tuple[str, str]:
        child = start("collector", CLI + ["collector", "--db", str(self.logs / "rca.duckdb"),
                                          "--grpc-listen", "127.0.0.1:0",
                                          "--http-listen", "127.0.0.1:0"],
                      r"ingest on (?P<grpc>\S+) .*API on (?P<http>http://\S+)", self.logs,
                      timeout=READY_TIMEOUT_S, env=_env())
        self.children.append(child)
        return child.ready.group("grpc"), child.ready.group("http")

    def start_server(self, version: str) -> Child:
        slow = version if version != BASE_VERSION else ""
        env = _env(APP_VERSION=version, DEMO_SLOW_VERSIONS=slow, DEMO_WORKERS=str(WORKERS),
                   DEMO_FLAGS_FILE=str(self.flags_file), DEMO_SLOWDOWN_FILE=str(self.slowdown_file),
                   PYROMETER_REQUESTS_ADDR=self.requests_addr)
        if self.gc_pauses:  # noise: gcpause/sitecustomize.py runs inside the server
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(GC_PAUSE_DIR),
                                                               env.get("PYTHONPATH")]))
            env[GC_SEED_VAR] = self.tag
        self._restarts += 1
        child = start(f"server-{self._restarts}-{version}",
                      [sys.executable, str(gpu_sim.DEMO / self.script), "--host", "127.0.0.1",
                       "--port", str(self.port), "--seed", self.tag],
                      r"listening on (?P<url>http://\S+)", self.logs, timeout=READY_TIMEOUT_S, env=env)
        self.children.append(child)
        self.server = child
        return child

    def restart_server(self, version: str) -> None:
        """A deploy: the old process drains and exits, the new one binds the same port."""
        if self.server is not None:
            self.server.stop()
        self.start_server(version)

    def start_agent(self, grpc: str, recording: Path) -> Child:
        scrape = (["--scrape", f"http://127.0.0.1:{self.port}/metrics",
                   "--scrape-interval", str(SCRAPE_INTERVAL_S)] if self.llm else [])
        child = start("agent", CLI + ["agent", "--collector", grpc, "--service", SERVICE,
                                      # the port too: another run of the evaluation on this
                                      # machine (same seeds, so same tags) is not this one
                                      "--match", rf"{re.escape(self.script)} .*--port {self.port} "
                                      rf"--seed {self.tag}$", *scrape,
                                      "--window", str(self.settings.window_s),
                                      "--requests-listen", self.requests_addr,
                                      "--gpu", f"replay:{recording}", "--gpu-interval", "1",
                                      *(["--instance", self.instance] if self.instance else [])],
                      r"profiling pid", self.logs, timeout=READY_TIMEOUT_S, env=_env())
        self.children.append(child)
        self.agent = child
        return child

    def start_cotenant(self, seed: int) -> Child:
        """Background noise: a neighbour burning a varying, bounded share of one core."""
        child = start("cotenant", [sys.executable, str(Path(cotenant.__file__)), "--seed", str(seed)],
                      cotenant.READY, self.logs, timeout=READY_TIMEOUT_S, env=_env())
        self.children.append(child)
        return child

    def start_load(self, duration_s: float, steps: list[dict[str, float]], seed: int,
                   rate: float) -> Child:
        words, endpoint = ((LLM_WORDS, ["--endpoint", "generate", "--max-tokens", str(LLM_MAX_TOKENS)])
                           if self.llm else (BASE_WORDS, []))
        child = start("loadgen", [sys.executable, str(gpu_sim.DEMO / "loadgen.py"),
                                  "--url", f"http://127.0.0.1:{self.port}", "--rate", str(rate),
                                  "--text-words", str(words), "--duration", f"{duration_s:.2f}",
                                  "--senders", "64", "--seed", str(seed), *endpoint,
                                  "--schedule", json.dumps(steps)],
                      r"loadgen started", self.logs, timeout=READY_TIMEOUT_S, env=_env())
        self.children.append(child)
        return child

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop(signal.SIGKILL if child.name == "collector" else signal.SIGTERM)


SETTINGS = Settings()


def _wait_until(deadline: float, stop: threading.Event | None = None) -> None:
    """Let scenario time pass until a planned moment of the timeline."""
    (stop or threading.Event()).wait(max(0.0, deadline - time.time()))


def api_get(api: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
    url = f"{api}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body)
        except ValueError:
            return err.code, {"error": body.decode(errors="replace")[:500]}


def run_one(plan: RunPlan, timing: Timing, workdir: Path, settings: Settings = SETTINGS) -> dict[str, Any]:
    """Run one plan end to end; the record holds the ground truth and what was detected."""
    workdir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"plan": plan.as_dict(), "workdir": str(workdir)}
    # One of two instances: the first stack is instance a, a peer is instance b, both of
    # the one service, half the load each; the fault reaches b only.
    stack, peer = ((Stack(workdir, plan, settings, f"{plan.seed}1", "rca-a"),
                    Stack(workdir / "instance-b", plan, settings, f"{plan.seed}2", "rca-b"))
                   if plan.instances == 2 else (Stack(workdir, plan, settings), None))
    episode = (gpu_sim.ThermalEpisode(plan.fault_at_s, plan.fault_s, plan.magnitude["sm_clock_mhz"])
               if plan.simulated else gpu_sim.NO_EPISODE)
    recording = gpu_sim.write_recording(workdir / "gpu.jsonl", episode, plan.total_s + 120, plan.seed)
    inject = faults.injector(plan)
    driver: gpu_sim.SlowdownDriver | None = None
    try:
        grpc, api = stack.start_collector()
        record["api"] = api
        stack.start_server(BASE_VERSION)
        if peer is not None:
            peer.start_server(BASE_VERSION)
        if plan.noise:  # before the agent, so the baseline has the neighbour in it too
            stack.start_cotenant(plan.seed)
        stack.start_agent(grpc, recording)
        if peer is not None:
            peer.start_agent(grpc, recording)
        anchor = time.time()  # the replay started a moment before the agent said so
        if plan.simulated:
            driver = gpu_sim.SlowdownDriver(stack.slowdown_file, episode, anchor)
            driver.start()
        launched = time.time()
        steps = [dict(s, at=round(anchor + s["at"] - launched, 3)) for s in inject.load_steps(plan)]
        share = plan.base_rate / plan.instances
        load = stack.start_load(anchor + plan.total_s - launched, steps, plan.seed, share)
        peer_load = (peer.start_load(anchor + plan.total_s - launched, [], plan.seed + 1, share)
                     if peer is not None else None)
        load_from = time.time()
        record["decoys"] = decoys.post_due(plan, api, SERVICE, anchor, anchor + plan.fault_at_s,
                                           restart=lambda: stack.restart_server(BASE_VERSION))
        _wait_until(anchor + plan.fault_at_s)
        target = peer or stack
        began = inject.start(target)
        _wait_until(anchor + plan.fault_at_s + plan.fault_s)
        ended = inject.stop(target)
        load.proc.wait(plan.total_s + 120)
        if peer_load is not None:
            peer_load.proc.wait(120)
        load_to = time.time()
        if driver is not None:
            driver.stop()
        for each in (stack, peer):
            if each is not None:
                assert each.agent is not None
                each.agent.stop(signal.SIGTERM, timeout=60)  # the agent ships its last window
        record["truth"] = _truth(plan, anchor, began, ended, load.output())
        record["window"] = {"from": load_from, "to": load_to, "anchor": anchor}
        record["load"] = last_json_line(load.output())
        record.update(_query(api, load_from, load_to, timing, settings))
    except Exception as exc:  # one broken run must not end the evaluation
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    finally:
        try:
            if driver is not None:
                driver.stop()
        finally:
            if peer is not None:
                peer.close()
            stack.close()  # burners and restarted servers are among its children
    return record


def _truth(plan: RunPlan, anchor: float, began: float | None, ended: float | None,
           load_output: str) -> dict[str, Any] | None:
    """When the fault really began and ended (unix seconds), as the injectors recorded it."""
    if plan.expected is None:
        return None
    extra: dict[str, Any] = {}
    steps = len(faults.injector(plan).load_steps(plan))
    times = faults.load_step_times(load_output)
    if len(times) != steps:
        raise RuntimeError(f"load generator applied {len(times)} schedule steps, expected {steps}")
    if plan.scenario in ("payload_size", "traffic_surge", "gradual_surge", "llm_prompt_shift"):
        began, ended = times[0], times[-1]
    elif plan.scenario == "overlap":  # the flag starts it; whichever ends last ends it
        assert ended is not None
        ended = max(ended, times[-1])
        extra["joined"] = times[0]  # when the second fault (the surge) joined
    if plan.instances == 2:
        extra["instance"] = "rca-b"  # the one the fault reached
    elif plan.simulated:
        began, ended = anchor + plan.fault_at_s, anchor + plan.fault_at_s + plan.fault_s
    assert began is not None and ended is not None
    return {"kind": plan.expected, "kinds": list(plan.causes), "start": began, "end": ended,
            "simulated": plan.simulated, "label": gpu_sim.LABEL if plan.simulated else None,
            **extra}


def _query(api: str, start: float, end: float, timing: Timing, settings: Settings) -> dict[str, Any]:
    window = {"service": SERVICE, "from": f"{start:.3f}", "to": f"{end:.3f}"}
    status, spikes = api_get(api, "/api/v1/spikes", {
        **window, "baseline": timing.api_baseline, "step": timing.api_step,
        "percentile": settings.percentile})
    _, latency = api_get(api, "/api/v1/latency", {**window, "step": timing.api_step})
    _, events = api_get(api, "/api/v1/events", window)
    return {"spikes_http": status, "spikes": spikes, "events": events.get("events", []),
            "latency": [{k: p.get(k) for k in ("start_ns", "count", "latency_p50_ms", "latency_p99_ms")}
                        for p in latency.get("points", [])]}
