"""Pipeline stages: a window's samples split into what an inference request goes through.

The people who run a model server think in stages (tokenize, forward pass, post-process),
not in functions: "forward pass +38 ms per request, tokenization flat" is the sentence
they act on. A stage rule names a stage and matches frames by function and/or file
(regular expressions, searched). Each sample goes to one stage:

1. *waiting* when its leaf frame waits (waiting.py): a thread that waits did not work in
   any stage, whatever called it;
2. else the first rule, in order, that matches any frame of the stack: the user's own
   rules first (a config file), then the defaults below. Any frame, not the innermost,
   because a forward pass spends its time in numpy or torch kernels called from it, and
   those must count as the forward pass, not as "numpy";
3. else *serving framework* when the leaf frame is the server's (aiohttp, uvicorn,
   gRPC, the standard library's socketserver...): routing, parsing, writing replies;
4. else *other*: the application's own code that no rule names.

Time per request is the stage's samples times the sampling period over the window's
requests: the thread time a request spent in the stage as py-spy sampled it (on-CPU and
runnable; a wall-clock profile, `--idle`, counts sleeping threads too).

The defaults follow the libraries' module layout (read from their sources: Hugging Face
transformers 4.x, tokenizers 0.x, sentence-transformers 2.x-3.x, torch 2.x); they are a
starting point, and a stage a service names differently belongs in its own rules.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyrometer.agent.shared.model import Frame, Stack
from pyrometer.collector.analysis.waiting import is_waiting
from pyrometer.collector.jsonfile import FileConfigError, read_json

WAITING = "waiting"
SERVING = "serving framework"
OTHER = "other"


@dataclass(frozen=True, slots=True)
class StageRule:
    """Frames whose function matches `function` and whose file matches `file` (either
    may be absent, not both) belong to `stage`."""

    stage: str
    function: re.Pattern[str] | None = None
    file: re.Pattern[str] | None = None

    def matches(self, frame: Frame) -> bool:
        return ((self.function is None or self.function.search(frame.name) is not None)
                and (self.file is None or self.file.search(frame.file) is not None))


def rule(stage: str, function: str | None = None, file: str | None = None) -> StageRule:
    if function is None and file is None:
        raise ValueError(f"stage rule for {stage!r} names neither a function nor a file")
    return StageRule(stage, re.compile(function) if function is not None else None,
                     re.compile(file) if file is not None else None)


_LIB = r"(^|/)"  # a file path below sys.path, as py-spy shortens it, or a full one
DEFAULT_RULES: tuple[StageRule, ...] = (
    # tokenizers' Rust core is called from tokenizers/implementations and from transformers'
    # tokenization_utils*.py (slow and fast tokenizers alike)
    rule("tokenization", file=_LIB + r"(tokenizers/|transformers/tokenization_utils)"),
    rule("tokenization", function=r"(?i)(^|[._])(tokeni[sz]e\w*|batch_encode_plus|encode_plus)$"),
    # a torch module's call, transformers' model code, generation, other runtimes
    rule("forward pass", file=_LIB + r"(torch/nn/|transformers/models/|transformers/generation/"
                              r"|onnxruntime/|tensorrt/|vllm/model_executor/)"),
    rule("forward pass", function=r"(^|[._])(model_)?forward(_\w+)?$"),
    rule("pre-processing", function=r"(?i)(^|[._])(pre_?process\w*|prepare_inputs\w*|collate\w*)$"),
    rule("pre-processing", file=_LIB + r"(transformers/(image|feature_extraction)_utils"
                                r"|torchvision/transforms/|PIL/)"),
    rule("post-processing", function=r"(?i)(^|[._])(post_?process\w*)$"),
)
SERVING_FILES = re.compile(
    _LIB + r"(aiohttp/|uvicorn/|starlette/|fastapi/|grpc/|_grpc|flask/|werkzeug/|gunicorn/"
    r"|sanic/|tornado/|socketserver\.py|http/server\.py|asyncio/|json/|selectors\.py"
    r"|concurrent/futures/|threading\.py|wsgiref/)")


def classify(stack: Stack, rules: Sequence[StageRule],
             functions: dict[tuple[str, str], int] | None = None) -> str:
    """The stage of one stack (root first); see the module docstring.

    The first rule that any of the stack's frames matches: the least, over its frames,
    of the first rule each frame matches. A rule looks at a frame's function and file
    only, so `functions` may keep that per (name, file) across stacks of the same
    `rules`: a fleet's profile has thousands of stacks of a few dozen functions.
    """
    if not stack:
        return OTHER
    if is_waiting(stack[-1]):
        return WAITING
    memo: dict[tuple[str, str], int] = {} if functions is None else functions
    first = len(rules)
    for frame in stack:
        key = (frame.name, frame.file)
        found = memo.get(key)
        if found is None:
            found = memo[key] = next(
                (n for n, each in enumerate(rules) if each.matches(frame)), len(rules))
        if found < first:
            first = found
    if first < len(rules):
        return rules[first].stage
    return SERVING if SERVING_FILES.search(stack[-1].file) else OTHER


@dataclass(frozen=True, slots=True)
class StageShare:
    stage: str
    samples: int
    share: float  # of the window's samples
    ms_per_request: float  # NaN without requests


@dataclass(frozen=True, slots=True)
class StageSplit:
    stages: tuple[StageShare, ...]  # largest first
    samples: int
    requests: int
    period_ms: float

    def by_stage(self) -> dict[str, StageShare]:
        return {s.stage: s for s in self.stages}


class Classified:
    """What `split` found, for the next split of stacks of the same rules: each stack's
    stage by the stack object's id (the stack kept beside it so that no other object
    can take its id while the entry lives), and each function's first rule (`classify`)."""

    __slots__ = ("functions", "stacks")

    def __init__(self) -> None:
        self.stacks: dict[int, tuple[Stack, str]] = {}
        self.functions: dict[tuple[str, str], int] = {}


def split(samples: Iterable[tuple[Stack, int]], requests: int, rate_hz: float,
          rules: Sequence[StageRule], classified: Classified | None = None) -> StageSplit:
    """Each stage's samples, share and time per request in one window.

    `classified` carries each stack's stage from one call to the next, for windows whose
    profiles share their stack objects, as a spike's and its baseline's read from one
    store do (the store keeps one object per stack): their stacks are mostly the same,
    and classifying one matches its frames against every rule. The same `rules` must
    go with the same `classified`.
    """
    memo = Classified() if classified is None else classified
    stacks, functions = memo.stacks, memo.functions
    counts: dict[str, int] = {}
    for stack, count in samples:
        known = stacks.get(id(stack))
        if known is None:
            known = stacks[id(stack)] = (stack, classify(stack, rules, functions))
        stage = known[1]
        counts[stage] = counts.get(stage, 0) + count
    total = sum(counts.values())
    period_ms = 1000.0 / rate_hz if rate_hz > 0 else math.nan
    shares = tuple(
        StageShare(stage, n, n / total, n * period_ms / requests if requests else math.nan)
        for stage, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    return StageSplit(shares, total, requests, period_ms)


# a stage whose time per request moved less than this is "flat" in the summary: py-spy's
# samples of a minute of a few hundred requests are not finer than that
FLAT_MS = 1.0
FLAT_RATIO = 0.1


@dataclass(frozen=True, slots=True)
class StageChange:
    stage: str
    baseline_ms: float
    spike_ms: float
    baseline_share: float
    spike_share: float

    @property
    def delta_ms(self) -> float:
        return self.spike_ms - self.baseline_ms

    @property
    def flat(self) -> bool:
        return (abs(self.delta_ms) < FLAT_MS
                or abs(self.delta_ms) < FLAT_RATIO * max(self.baseline_ms, self.spike_ms))


def compare(baseline: StageSplit, spike: StageSplit) -> tuple[StageChange, ...]:
    """Every stage of either window, the largest change of time per request first."""
    before, after = baseline.by_stage(), spike.by_stage()
    changes = []
    for stage in dict.fromkeys([*before, *after]):
        b, a = before.get(stage), after.get(stage)
        changes.append(StageChange(
            stage, b.ms_per_request if b else 0.0, a.ms_per_request if a else 0.0,
            b.share if b else 0.0, a.share if a else 0.0))
    return tuple(sorted(changes, key=lambda c: (-abs(c.delta_ms) if not math.isnan(c.delta_ms)
                                                 else 0.0, c.stage)))


def summary(changes: Sequence[StageChange], shown: int = 3) -> str:
    """'forward pass +38.0 ms per request, tokenization flat': the largest changes, and
    the flat stages named as flat (that a stage did not move is evidence too)."""
    moved = [c for c in changes if not c.flat and not math.isnan(c.delta_ms)][:shown]
    flat = [c.stage for c in changes if c.flat and c.stage not in (WAITING, OTHER)][:shown]
    parts = [f"{c.stage} {c.delta_ms:+.1f} ms per request" for c in moved]
    parts += [f"{stage} flat" for stage in flat]
    return ", ".join(parts) if parts else "no stage changed"


class StageConfigError(FileConfigError):
    """A stage rules file that cannot be used; the message names the file and the rule."""


def load_rules(path: Path) -> tuple[StageRule, ...]:
    """A JSON file of the user's own rules, put before the defaults:

    {"stages": [{"stage": "retrieval", "function": "search|knn", "file": "vector_store"},
                {"stage": "forward pass", "file": "my_model/"}]}
    """
    doc = read_json(path, "stage rules", StageConfigError)
    items = doc.get("stages") if isinstance(doc, Mapping) else None
    if not isinstance(items, list):
        raise StageConfigError(f'stage rules {path}: expected {{"stages": [...]}}')
    return tuple(_rule(path, n, item) for n, item in enumerate(items, 1)) + DEFAULT_RULES


def _rule(path: Path, n: int, item: Any) -> StageRule:
    where = f"stage rules {path}, rule {n}"
    if not isinstance(item, Mapping) or not isinstance(item.get("stage"), str) \
            or not item["stage"].strip():
        raise StageConfigError(f'{where}: needs a "stage" name')
    unknown = set(item) - {"stage", "function", "file"}
    if unknown:
        raise StageConfigError(f"{where}: unknown keys {sorted(unknown)}; use stage, function, file")
    patterns = {k: item.get(k) for k in ("function", "file")}
    for key, value in patterns.items():
        if value is not None and not isinstance(value, str):
            raise StageConfigError(f"{where}: {key} must be a regular expression string")
    try:
        return rule(item["stage"].strip(), patterns["function"], patterns["file"])
    except re.error as err:
        raise StageConfigError(f"{where}: bad regular expression: {err}") from None
    except ValueError as err:
        raise StageConfigError(f"{where}: {err}") from None
