"""The agent's configuration: flag > PYROMETER_* environment variable > default.

Resolved and validated once, at start-up; a bad value is a ConfigError whose message
names the flag and says what is expected.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import tempfile
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from pyrometer.agent.shared.errors import ConfigError
from pyrometer.agent.ship import channel
from pyrometer.agent.ship.channel import Security

T = TypeVar("T")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_LISTEN = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_LABEL_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_SIZE = re.compile(r"^(\d+)\s*([KMG]i?B?|B)?$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
DEFAULT_SPOOL_MAX_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class AgentConfig:
    collector: str
    service: str
    pid: int | None
    match: str | None
    instance: str
    labels: tuple[tuple[str, str], ...]
    rate_hz: int = 100
    window_s: float = 10.0
    gil: bool = False
    idle: bool = False
    threads: bool = False
    subprocesses: bool = False
    native: bool = False
    gpu: str = "auto"  # auto | off | replay:FILE
    gpu_interval_s: float = 1.0
    process_interval_s: float = 1.0
    requests_listen: str | None = "127.0.0.1:7072"  # None: no UDP listener
    proxy: tuple[str, str] | None = None  # (listen, upstream)
    version: str | None = None  # fixed version; else read from the target's environment
    version_keys: tuple[str, ...] = ("APP_VERSION", "GIT_COMMIT", "IMAGE_TAG")
    flush_interval_s: float = 5.0  # telemetry ships at least this often between windows
    spool_dir: str | None = None  # None: no spool, undelivered batches only in memory
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    security: Security = Security()  # token and TLS for the collector
    scrape: str | None = None  # the model server's Prometheus metrics URL
    scrape_interval_s: float = 5.0
    scrape_mapping: str | None = None  # JSON file of extra rules (agent/engine/mapping.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `pyrometer agent` flags; defaults are None so env vars can fill them in."""
    parser.add_argument("--collector", help="collector gRPC address HOST:PORT [PYROMETER_COLLECTOR]")
    parser.add_argument("--service", help="service name the data is filed under [PYROMETER_SERVICE]")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--pid", type=int, help="pid of the Python process to profile")
    target.add_argument("--match", help="regex matched against process command lines [PYROMETER_MATCH]")
    parser.add_argument("--instance", help="instance name (default: host name) [PYROMETER_INSTANCE]")
    parser.add_argument("--label", action="append", default=[], metavar="K=V",
                        help="label added to all data, e.g. version=1.2.3 (repeatable)")
    parser.add_argument("--rate", type=int, help="samples per second (default 100) [PYROMETER_RATE]")
    parser.add_argument("--window", type=float, help="seconds per profile window (default 10)")
    parser.add_argument("--gil", action="store_true", help="only sample threads holding the GIL")
    parser.add_argument("--idle", action="store_true",
                        help="include idle threads (wall-clock profile; marked as such)")
    parser.add_argument("--threads", action="store_true", help="record the thread as a label")
    parser.add_argument("--subprocesses", action="store_true",
                        help="also profile child processes (pre-fork workers); pid as a label")
    parser.add_argument("--native", action="store_true",
                        help="include native frames (pauses the target at each sample)")
    parser.add_argument("--gpu", help="auto | off | replay:FILE (recorded NVML readings) "
                        "(default auto) [PYROMETER_GPU]")
    parser.add_argument("--gpu-interval", type=float, help="seconds between GPU readings "
                        "(0.1-10, default 1)")
    parser.add_argument("--requests-listen", help="UDP HOST:PORT where the middleware sends "
                        "request records, or 'off' (default 127.0.0.1:7072) "
                        "[PYROMETER_REQUESTS_LISTEN]")
    parser.add_argument("--proxy", metavar="LISTEN=UPSTREAM",
                        help="reverse-proxy LISTEN (HOST:PORT) to UPSTREAM (HOST:PORT or URL), "
                        "recording every request [PYROMETER_PROXY]")
    parser.add_argument("--version", dest="target_version",
                        help="the target's version (default: read from its environment)")
    parser.add_argument("--spool-dir", help="where batches wait on disk while the collector is "
                        "unreachable, or 'off' (default: $XDG_STATE_HOME/pyrometer/spool/SERVICE_COLLECTOR, "
                        "else TMPDIR/pyrometer-spool-UID/SERVICE_COLLECTOR) [PYROMETER_SPOOL_DIR]")
    parser.add_argument("--spool-max-bytes", help="bound on the spool; past it the oldest "
                        "batches are dropped and counted, e.g. 64M (default 64M) "
                        "[PYROMETER_SPOOL_MAX_BYTES]")
    parser.add_argument("--version-env", help="comma-separated environment variables of the "
                        "target that hold its version (default APP_VERSION,GIT_COMMIT,IMAGE_TAG)")
    parser.add_argument("--scrape", metavar="URL", help="the model server's Prometheus metrics "
                        "URL (vLLM, Triton, TorchServe, TGI are known) [PYROMETER_SCRAPE]")
    parser.add_argument("--scrape-interval", type=float, help="seconds between scrapes (1-300, "
                        "default 5)")
    parser.add_argument("--scrape-mapping", metavar="FILE", help="JSON file mapping other "
                        "engines' metrics to Pyrometer's names")
    channel.add_arguments(parser)


def resolve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> AgentConfig:
    env = os.environ if env is None else env
    collector = _pick(args.collector, env, "PYROMETER_COLLECTOR", None, str, "--collector")
    service = _pick(args.service, env, "PYROMETER_SERVICE", None, str, "--service")
    match = args.match
    if args.pid is None:  # PYROMETER_MATCH must not override an explicit --pid
        match = _pick(args.match, env, "PYROMETER_MATCH", None, str, "--match")
    if not collector:
        raise ConfigError("--collector HOST:PORT is required (or PYROMETER_COLLECTOR)")
    if not _HOST_PORT.match(collector) or not 0 < int(collector.rsplit(":", 1)[1]) < 65536:
        raise ConfigError(f"--collector {collector!r}: expected HOST:PORT, e.g. 127.0.0.1:7070")
    if not service or len(service) > 128:
        raise ConfigError("--service NAME is required (1-128 characters) (or PYROMETER_SERVICE)")
    if args.pid is None and not match:
        raise ConfigError("say which process to profile: --pid PID or --match REGEX")
    if args.pid is not None and args.pid <= 0:
        raise ConfigError(f"--pid {args.pid}: expected a positive process id")
    if match:
        _check_regex(match)
    rate = _pick(args.rate, env, "PYROMETER_RATE", 100, int, "--rate")
    if not 1 <= rate <= 1000:
        raise ConfigError(f"--rate {rate}: expected 1-1000 samples per second")
    window = _pick(args.window, env, "PYROMETER_WINDOW", 10.0, float, "--window")
    if not 1.0 <= window <= 300.0:
        raise ConfigError(f"--window {window}: expected 1-300 seconds")
    return AgentConfig(
        collector=collector, service=service, pid=args.pid, match=match,
        instance=_pick(args.instance, env, "PYROMETER_INSTANCE", socket.gethostname(), str, "--instance"),
        labels=parse_labels(args.label), rate_hz=rate, window_s=window, gil=args.gil,
        idle=args.idle, threads=args.threads, subprocesses=args.subprocesses, native=args.native,
        **_telemetry(args, env), **_spool(args, env, service, collector),
        security=channel.resolve(args, env), **_scrape(args, env),
    )


def _scrape(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    url = _pick(getattr(args, "scrape", None), env, "PYROMETER_SCRAPE", None, str, "--scrape")
    interval = getattr(args, "scrape_interval", None)
    interval = 5.0 if interval is None else interval
    mapping = getattr(args, "scrape_mapping", None)
    if url:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"--scrape {url!r}: expected an http(s) URL, e.g. "
                              "http://127.0.0.1:8000/metrics")
    if not 1.0 <= interval <= 300.0:
        raise ConfigError(f"--scrape-interval {interval}: expected 1-300 seconds")
    if mapping and not url:
        raise ConfigError("--scrape-mapping needs --scrape URL")
    return {"scrape": url or None, "scrape_interval_s": interval, "scrape_mapping": mapping}


def _spool(args: argparse.Namespace, env: Mapping[str, str], service: str, collector: str
           ) -> dict[str, Any]:
    where = _pick(args.spool_dir, env, "PYROMETER_SPOOL_DIR", "", str,
                  "--spool-dir")
    size = _pick(args.spool_max_bytes, env, "PYROMETER_SPOOL_MAX_BYTES",
                 str(DEFAULT_SPOOL_MAX_BYTES), str, "--spool-max-bytes")
    return {"spool_dir": None if where == "off" else where or default_spool_dir(service, collector, env),
            "spool_max_bytes": parse_size("--spool-max-bytes", size)}


def default_spool_dir(service: str, collector: str, env: Mapping[str, str]) -> str:
    """Per service and collector, so that the agent replacing a killed one finds its
    spool, and never hands it to another collector.

    A sidecar should mount a volume that outlives the container (an emptyDir) there.
    """
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{service}@{collector}").lstrip(".") or "service"
    state = env.get("XDG_STATE_HOME")
    if state:
        return os.path.join(state, "pyrometer", "spool", name)
    # per user: the temp dir is shared, and the spool refuses a directory it does not own
    return os.path.join(tempfile.gettempdir(), f"pyrometer-spool-{os.geteuid()}", name)


def parse_size(flag: str, value: str) -> int:
    """Bytes from "67108864", "64M", "64MiB" or "1G" (binary units)."""
    match = _SIZE.match(value.strip())
    if match is None:
        raise ConfigError(f"{flag} {value!r}: expected a size in bytes, e.g. 64M or 1G")
    unit = (match[2] or "").upper().rstrip("B").rstrip("I")
    size = int(match[1]) * _UNITS[unit]
    if size < 1 << 20:
        raise ConfigError(f"{flag} {value!r}: expected at least 1M (one batch can be that big)")
    return size


def _telemetry(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    gpu = _pick(args.gpu, env, "PYROMETER_GPU", "auto", str, "--gpu")
    if gpu not in ("auto", "off") and not (gpu.startswith("replay:") and len(gpu) > 7):
        raise ConfigError(f"--gpu {gpu!r}: expected auto, off or replay:FILE")
    interval = args.gpu_interval if args.gpu_interval is not None else 1.0
    if not 0.1 <= interval <= 10:
        raise ConfigError(f"--gpu-interval {interval}: expected 0.1-10 seconds")
    listen = _pick(args.requests_listen, env, "PYROMETER_REQUESTS_LISTEN", "127.0.0.1:7072", str,
                   "--requests-listen")
    if listen != "off":
        _check_address("--requests-listen", listen)
    proxy = _pick(args.proxy, env, "PYROMETER_PROXY", None, str, "--proxy")
    keys = tuple(k.strip() for k in (args.version_env or "").split(",") if k.strip())
    return {
        "gpu": gpu, "gpu_interval_s": interval,
        "requests_listen": None if listen == "off" else listen,
        "proxy": _parse_proxy(proxy) if proxy else None,
        "version": args.target_version,
        "version_keys": keys or AgentConfig.__dataclass_fields__["version_keys"].default,
    }


def _parse_proxy(value: str) -> tuple[str, str]:
    listen, sep, upstream = value.partition("=")
    if not sep or not upstream:
        raise ConfigError(f"--proxy {value!r}: expected LISTEN=UPSTREAM, e.g. "
                          "0.0.0.0:8080=127.0.0.1:8000")
    _check_address("--proxy (listen side)", listen)
    # the proxy forwards paths as they come: an upstream with a path of its own is refused
    target = upstream.split("://", 1)[-1].removesuffix("/")
    _check_address("--proxy (upstream side)", target)
    return listen, upstream


def _check_address(flag: str, value: str) -> None:
    match = _LISTEN.match(value)
    if not match or int(match.group(2)) > 65535:
        raise ConfigError(f"{flag} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:7072")


def parse_labels(items: list[str]) -> tuple[tuple[str, str], ...]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not _LABEL_KEY.match(key) or len(value) > 256:
            raise ConfigError(f"--label {item!r}: expected KEY=VALUE with a key like 'version'")
        labels[key] = value
    return tuple(sorted(labels.items()))


def _pick(flag: T | None, env: Mapping[str, str], name: str, default: T,
          parse: Callable[[str], T], flag_name: str) -> T:
    if flag is not None:
        return flag
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} (for {flag_name}) is not a valid value") from None


def _check_regex(pattern: str) -> None:
    try:
        re.compile(pattern)
    except re.error as err:
        raise ConfigError(f"--match {pattern!r} is not a valid regular expression: {err}") from None
