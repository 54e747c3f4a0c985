"""pprof profiles as Pyroscope's SDKs write them, push requests holding them, and a plain
HTTP call with a bearer token for sending them (and Grafana's queries) to a collector."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from pyrometer.proto import profile_pb2, push_pb2

PERIOD_NS = 10_000_000  # 100 Hz
WRITE, READ = "w-" + "0123456789abcdef" * 2, "r-" + "fedcba9876543210" * 2  # the test tokens


def pprof(samples: Mapping[tuple[str, ...], int], *, time_ns: int, duration_ns: int,
          sample_type: tuple[str, str] = ("cpu", "nanoseconds"), period_ns: int = PERIOD_NS,
          thread: str = "", file: str = "app.py", compress: bool = True) -> bytes:
    """A pprof profile: each stack (root first, function names) with its sample count; for
    a nanoseconds type each count is written as count * period, as the SDKs do."""
    strings: list[str] = [""]

    def sid(text: str) -> int:
        if text not in strings:
            strings.append(text)
        return strings.index(text)

    profile = profile_pb2.Profile(time_nanos=time_ns, duration_nanos=duration_ns, period=period_ns)
    profile.sample_type.add(type=sid(sample_type[0]), unit=sid(sample_type[1]))
    profile.period_type.type, profile.period_type.unit = sid("cpu"), sid("nanoseconds")
    functions: dict[str, int] = {}
    for stack, count in samples.items():
        ids = []
        for name in stack:
            if name not in functions:
                functions[name] = len(functions) + 1
                profile.function.add(id=functions[name], name=sid(name), filename=sid(file))
                location = profile.location.add(id=functions[name])
                location.line.add(function_id=functions[name], line=len(functions))
            ids.append(functions[name])
        value = count * period_ns if sample_type[1] == "nanoseconds" else count
        sample = profile.sample.add(location_id=list(reversed(ids)), value=[value])
        if thread:
            sample.label.add(key=sid("thread_name"), str=sid(thread))
    profile.string_table.extend(strings)
    data = profile.SerializeToString()
    return gzip.compress(data) if compress else data


def push_request(series: Sequence[tuple[Mapping[str, str], Sequence[bytes]]]) -> push_pb2.PushRequest:
    """A PushRequest of (labels, raw profiles) series."""
    request = push_pb2.PushRequest()
    for labels, profiles in series:
        added = request.series.add()
        for name, value in labels.items():
            added.labels.add(name=name, value=value)
        for raw in profiles:
            added.samples.add(raw_profile=raw)
    return request


def call(base: str, method: str, path: str, body: bytes | None = None,
         headers: Mapping[str, str] | None = None, token: str | None = WRITE
         ) -> tuple[int, Mapping[str, str], bytes]:
    """(status, headers, body) of one request to the collector at `base`, as `token`."""
    request = urllib.request.Request(base + path, data=body, method=method, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()
