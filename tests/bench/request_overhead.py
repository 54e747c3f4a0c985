"""What recording requests costs: the middleware per call, the proxy per request.

A measurement, not a test (pytest does not collect it). Run from the repository root:

    .venv/bin/python tests/bench/request_overhead.py [--calls 20000] [--repeats 7]
        [--rate 100] [--seconds 20] [--json OUT]

(a) Middleware: a trivial ASGI app and a trivial WSGI app are called directly in this
process, bare and wrapped, `--calls` times per repeat; the cost is the difference of
the medians over repeats, per call. The wrapped apps really send their datagrams, to a
UDP socket drained by another process (as the agent would be), and that process's
count shows they arrived. No event loop or server is involved: the ASGI coroutine runs
to completion with one send(None), so what is timed is the middleware alone.

(b) Proxy: an aiohttp upstream and the agent's ReverseProxy each run in their own
process. This process sends small POSTs (200-byte body, 32-byte reply) at a steady
`--rate` per second to each arm, alternating, direct and through the proxy, for
`--seconds` after a one-second warm-up; open loop (on a schedule, not waiting for the
previous reply). Latency is from sending to the whole reply read, on one keep-alive
connection pool per arm.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from pyrometer.agent.middleware import PyrometerASGIMiddleware, PyrometerWSGIMiddleware

DRAIN = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
sock.settimeout(1.0)
count = 0
while True:
    try:
        sock.recv(65536)
        count += 1
    except TimeoutError:
        if count:
            break
print(count, flush=True)
"""
UPSTREAM = """
from aiohttp import web
async def infer(request):
    await request.read()
    return web.Response(body=b'{"label": "cat", "score": 0.97}\\n')
app = web.Application()
app.router.add_post("/infer", infer)
web.run_app(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), print=None, access_log=None)
"""
PROXY = """
import asyncio, sys
from pyrometer.agent.requests.proxy import ReverseProxy
async def main():
    records = []
    proxy = ReverseProxy("127.0.0.1:0", sys.argv[1])
    print(await proxy.start(records.append), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print(len(records), flush=True)
    await proxy.close()
asyncio.run(main())
"""
SCOPE = {"type": "http", "method": "GET", "path": "/v1/items/42", "headers": []}
ENVIRON = {"REQUEST_METHOD": "GET", "PATH_INFO": "/v1/items/42", "CONTENT_LENGTH": ""}


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def _send(message: Any) -> None:
    pass


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
    return lambda data: None


def call_asgi(app: Any, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        try:
            app(SCOPE, _receive, _send).send(None)
        except StopIteration:
            pass
    return (time.perf_counter_ns() - start) / calls / 1000


def call_wsgi(app: Any, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        result = app(ENVIRON, _start_response)
        for _chunk in result:
            pass
        getattr(result, "close", lambda: None)()
    return (time.perf_counter_ns() - start) / calls / 1000


def middleware_cost(calls: int, repeats: int) -> dict[str, Any]:
    drain = subprocess.Popen([sys.executable, "-c", DRAIN], stdout=subprocess.PIPE, text=True)
    assert drain.stdout is not None
    address = f"127.0.0.1:{drain.stdout.readline().strip()}"
    asgi = PyrometerASGIMiddleware(asgi_app, address=address)
    wsgi = PyrometerWSGIMiddleware(wsgi_app, address=address)
    arms: dict[str, tuple[Callable[[Any, int], float], Any]] = {
        "asgi_bare": (call_asgi, asgi_app), "asgi_wrapped": (call_asgi, asgi),
        "wsgi_bare": (call_wsgi, wsgi_app), "wsgi_wrapped": (call_wsgi, wsgi)}
    per_call: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):  # interleaved, so drift hits every arm alike
        for name, (call, app) in arms.items():
            per_call[name].append(call(app, calls))
    received = int(drain.communicate(timeout=30)[0].strip())
    median = {name: statistics.median(values) for name, values in per_call.items()}
    return {
        "us_per_call": median,
        "asgi_cost_us": median["asgi_wrapped"] - median["asgi_bare"],
        "wsgi_cost_us": median["wsgi_wrapped"] - median["wsgi_bare"],
        "datagrams_sent": asgi.sender.sent + wsgi.sender.sent,
        "datagrams_failed": asgi.sender.errors + wsgi.sender.errors,
        "datagrams_received": received,
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_listening(port: int) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)  # the upstream process is still importing aiohttp
    raise RuntimeError(f"nothing listening on {port}")


async def _one(session: aiohttp.ClientSession, url: str, out: list[float], keep: bool) -> None:
    start = time.perf_counter_ns()
    async with session.post(url, data=b"p" * 200) as response:
        await response.read()
        assert response.status == 200, response.status
    if keep:
        out.append((time.perf_counter_ns() - start) / 1e6)


async def proxy_latency(rate: float, seconds: float) -> dict[str, Any]:
    upstream_port = _free_port()
    upstream = subprocess.Popen([sys.executable, "-c", UPSTREAM, str(upstream_port)])
    proxy = subprocess.Popen([sys.executable, "-c", PROXY, f"127.0.0.1:{upstream_port}"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proxy.stdout is not None and proxy.stdin is not None
        proxy_port = int(proxy.stdout.readline())
        await _wait_listening(upstream_port)
        latencies = await _steady_load(rate, seconds, {
            "direct": f"http://127.0.0.1:{upstream_port}/infer",
            "proxy": f"http://127.0.0.1:{proxy_port}/infer"})
        proxy.stdin.close()
        recorded = int(proxy.stdout.readline())
    finally:
        for child in (proxy, upstream):
            child.terminate()
            child.wait(10)
    result: dict[str, Any] = {"rate_per_arm": rate, "seconds": seconds, "proxy_records": recorded}
    for name, values in latencies.items():
        cuts = statistics.quantiles(values, n=100)
        result[name] = {"n": len(values), "p50_ms": statistics.median(values), "p99_ms": cuts[98]}
    result["added_p50_ms"] = result["proxy"]["p50_ms"] - result["direct"]["p50_ms"]
    result["added_p99_ms"] = result["proxy"]["p99_ms"] - result["direct"]["p99_ms"]
    return result


async def _steady_load(rate: float, seconds: float, urls: dict[str, str]) -> dict[str, list[float]]:
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    sessions = {name: aiohttp.ClientSession() for name in urls}
    tasks = []
    interval = 1.0 / (rate * len(urls))
    warmup = int(1.0 / interval)
    start = time.perf_counter()
    try:
        for i in range(warmup + int(seconds / interval)):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            name = list(urls)[i % len(urls)]
            tasks.append(asyncio.create_task(_one(sessions[name], urls[name], latencies[name], i >= warmup)))
        await asyncio.gather(*tasks)
    finally:
        for session in sessions.values():
            await session.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    results = {"middleware": middleware_cost(args.calls, args.repeats),
               "proxy": asyncio.run(proxy_latency(args.rate, args.seconds))}
    m, p = results["middleware"], results["proxy"]
    print(f"middleware cost per request: ASGI {m['asgi_cost_us']:.2f} us, WSGI {m['wsgi_cost_us']:.2f} us "
          f"(bare {m['us_per_call']['asgi_bare']:.2f} / {m['us_per_call']['wsgi_bare']:.2f} us per call); "
          f"datagrams sent {m['datagrams_sent']}, failed {m['datagrams_failed']}, "
          f"received {m['datagrams_received']}")
    print(f"proxy at {p['rate_per_arm']:.0f} rps per arm for {p['seconds']:.0f} s: "
          f"direct p50 {p['direct']['p50_ms']:.3f} ms p99 {p['direct']['p99_ms']:.3f} ms; "
          f"proxied p50 {p['proxy']['p50_ms']:.3f} ms p99 {p['proxy']['p99_ms']:.3f} ms; "
          f"added p50 {p['added_p50_ms']:.3f} ms p99 {p['added_p99_ms']:.3f} ms; "
          f"{p['proxy_records']} records for {p['proxy']['n']} proxied requests + warm-up")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
