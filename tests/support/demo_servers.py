"""The demo servers of deploy/demo as real processes on 127.0.0.1, for their tests."""

from __future__ import annotations

import importlib.util
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"
START_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0


def load_demo_module(name: str) -> ModuleType:
    """Import a deploy/demo file by path: deploy/ is not part of the installed package."""
    spec = importlib.util.spec_from_file_location(f"demo_{name}", DEMO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def read_ready_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    """The first stdout line, without blocking past the deadline if the server hangs."""
    assert proc.stdout is not None
    fd, buf = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not sel.select(remaining):
                pytest.fail(f"no ready line within {timeout}s (got {buf!r})")
            chunk = os.read(fd, 4096)
            if not chunk:
                pytest.fail(f"server exited before its ready line: rc={proc.wait()} out={buf!r}")
            buf += chunk
    return buf.split(b"\n", 1)[0].decode()


@contextmanager
def running_demo(tmp_path: Path, script: str, ready_prefix: str, env: Mapping[str, str],
                 *args: str) -> Iterator[str]:
    """Start deploy/demo/SCRIPT on a free port; yield its base URL (from the ready line
    after `ready_prefix`); SIGTERM it and expect rc 0."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DEMO_", "APP_"))}
    full_env.update(env)
    with open(tmp_path / "server.stderr", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, str(DEMO / script), "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=err, env=full_env,
        )  # fmt: skip
        try:
            line = read_ready_line(proc, START_TIMEOUT_S)
            assert line.startswith(ready_prefix), line
            yield line[len(ready_prefix) :]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(EXIT_TIMEOUT_S) == 0, (tmp_path / "server.stderr").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stdout is not None
            proc.stdout.close()
