"""The I/O around the converter: read the engine's metrics URL every interval.

An endpoint that does not answer, answers with an error, or returns something that is
not an exposition costs one warning when it starts failing and one line when it answers
again; the agent carries on without engine readings meanwhile and never stops for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from pyrometer.agent.engine.convert import Converter, ExpositionError
from pyrometer.agent.engine.mapping import Rule
from pyrometer.agent.shared.model import EngineReading

log = logging.getLogger("pyrometer.agent.engine")
MAX_BYTES = 16 << 20  # a vLLM exposition with many models is well under 1 MiB
MAX_TIMEOUT_S = 5.0


class ScrapeError(Exception):
    """The endpoint gave no exposition this time."""


def fetch(url: str, timeout_s: float) -> str:
    """The body of GET url as text; ScrapeError for anything but a 200 within the limits."""
    request = urllib.request.Request(url, headers={"Accept": "text/plain;version=0.0.4"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: bytes = response.read(MAX_BYTES + 1)
    except urllib.error.HTTPError as err:
        raise ScrapeError(f"HTTP {err.code}") from None
    except (OSError, http.client.HTTPException, ValueError) as err:
        raise ScrapeError(str(err) or type(err).__name__) from None
    if len(body) > MAX_BYTES:
        raise ScrapeError(f"exposition larger than {MAX_BYTES >> 20} MiB")
    return body.decode("utf-8", errors="replace")


async def scrape_periodically(url: str, rules: Sequence[Rule], interval_s: float,
                              emit: Callable[[EngineReading], None], stop: asyncio.Event) -> None:
    """Scrape until `stop` is set; each scrape's readings go to `emit`."""
    converter = Converter(rules, interval_s)
    failing: str | None = None
    silent_warned = False
    timeout = min(interval_s, MAX_TIMEOUT_S)
    while not stop.is_set():
        try:
            text = await asyncio.to_thread(fetch, url, timeout)
            readings = converter.convert(text, time.time_ns())
        except (ScrapeError, ExpositionError) as err:
            if failing is None:
                log.warning("engine metrics: %s: %s; retrying every %gs", url, err, interval_s)
            failing = str(err)
        else:
            if failing is not None:
                log.info("engine metrics: %s answers again", url)
            failing = None
            if not converter.matched and not silent_warned:
                log.warning("engine metrics: %s has none of the known series (vLLM, Triton, "
                            "TorchServe, TGI); give a --scrape-mapping", url)
                silent_warned = True
            for reading in readings:
                emit(reading)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
