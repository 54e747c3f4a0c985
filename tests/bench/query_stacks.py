"""The synthetic service's code: a pool of distinct Python stacks shaped like a model server's.

Every stack starts with the same server frames (uvicorn's loop, the ASGI app, the
handler), then walks down a lazily grown call tree to a depth of 20-40 frames, the way
py-spy stacks of an inference server look: a few hot paths through the model's forward
pass, and a long tail of rarer ones. Line numbers are part of a frame's identity, so one
function reached from several call sites is several frames, as in real data. Ids are
the collector's own content hashes, so they are as random (and as incompressible) as
the ones real ingest stores.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pyrometer.agent.shared.model import Frame, Stack
from pyrometer.collector.ingest.decode import frame_id, stack_id

PREFIX = (
    Frame("<module>", "server.py", 41),
    Frame("run", "uvicorn/main.py", 577),
    Frame("run", "asyncio/runners.py", 190),
    Frame("run_until_complete", "asyncio/base_events.py", 641),
    Frame("run_forever", "asyncio/base_events.py", 608),
    Frame("_run_once", "asyncio/base_events.py", 1922),
    Frame("_run", "asyncio/events.py", 80),
    Frame("run_asgi", "uvicorn/protocols/http/httptools_impl.py", 426),
    Frame("__call__", "starlette/applications.py", 123),
    Frame("app", "starlette/routing.py", 74),
    Frame("predict", "app/handlers.py", 58),
)
# (file, functions) of the code below the handler; deeper levels draw from later modules
MODULES = (
    ("app/handlers.py", ("validate", "tokenize_batch", "run_model", "postprocess", "to_json")),
    ("app/pipeline.py", ("prepare", "forward", "decode", "pad_batch", "collate")),
    ("transformers/tokenization_utils_base.py", ("__call__", "batch_encode_plus", "_batch_encode")),
    ("transformers/generation/utils.py", ("generate", "_sample", "prepare_inputs", "_update_cache")),
    ("transformers/models/llama/modeling_llama.py",
     ("forward", "attention", "mlp", "rotary_emb", "apply_rotary", "rms_norm", "repeat_kv")),
    ("torch/nn/modules/module.py", ("_wrapped_call_impl", "_call_impl", "forward")),
    ("torch/nn/functional.py", ("linear", "softmax", "silu", "scaled_dot_product_attention", "dropout")),
    ("torch/_tensor.py", ("__torch_function__", "to", "contiguous", "__getitem__")),
    ("numpy/core/fromnumeric.py", ("argmax", "sum", "_wrapreduction")),
    ("json/encoder.py", ("encode", "iterencode", "_iterencode")),
)
# how often a walk follows an existing child rather than growing a new one
REVISIT = 0.9
SPIKE_LEAF = Frame("synchronize", "torch/cuda/__init__.py", 792)


@dataclass(frozen=True, slots=True)
class StackPool:
    """The service's distinct stacks, index 0 the hottest; the last is the spike's."""

    stacks: tuple[Stack, ...]
    stack_ids: tuple[int, ...]

    @property
    def spike_index(self) -> int:
        return len(self.stacks) - 1

    def frames(self) -> dict[int, Frame]:
        """Every distinct frame by its id."""
        return {frame_id(f): f for stack in self.stacks for f in stack}


class _Tree:
    """A call tree grown on demand: each node gets up to a few children, made when first
    walked into, so popular prefixes are shared the way real call paths are."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.children: dict[tuple[Frame, ...], list[Frame]] = {}
        self.fanout: dict[tuple[Frame, ...], int] = {}

    def step(self, path: tuple[Frame, ...], depth: int) -> Frame:
        kids = self.children.setdefault(path, [])
        fanout = self.fanout.setdefault(path, self.rng.randint(1, 3))
        # Zipf-like choice among the existing children, or a new one while there is room
        if kids and (len(kids) >= fanout or self.rng.random() < REVISIT):
            return kids[min(int(self.rng.paretovariate(1.2)) - 1, len(kids) - 1)]
        level = (depth - len(PREFIX)) * len(MODULES) // 30 + self.rng.randrange(2)
        file, names = MODULES[min(len(MODULES) - 1, level)]
        kid = Frame(self.rng.choice(names), file, self.rng.randrange(20, 2000))
        kids.append(kid)
        return kid


def stack_pool(size: int, seed: int = 7) -> StackPool:
    """`size` distinct stacks of depth 20-40, the walk's first (most common) paths first."""
    rng = random.Random(seed)
    tree = _Tree(rng)
    seen: dict[Stack, None] = {}
    while len(seen) < size - 1:
        path: tuple[Frame, ...] = PREFIX
        for depth in range(len(PREFIX), rng.randint(20, 40)):
            path = (*path, tree.step(path, depth))
        seen.setdefault(path, None)
    hottest = next(iter(seen))
    stacks = (*seen, (*hottest, SPIKE_LEAF))  # the spike's new hot path: waiting on the GPU
    ids = tuple(stack_id([frame_id(f) for f in stack]) for stack in stacks)
    return StackPool(stacks, ids)
