"""The demo model's pipeline: tokenizer, numpy forward pass, post-processing.

Every stage is a module-level function whose name starts with its stage
(``preprocess_*``, ``model_*``, ``postprocess_*``), so that a flame graph of the
server reads like the pipeline even where the profiler shows bare function names.
The fault-injection variants (``model_forward_slow``,
``postprocess_render_json_costly``) compute the same answer as the normal path but
are distinct functions, so a code-path change is visible as a new frame.

The weights are random, drawn from a fixed seed at startup: the point is a realistic
CPU cost per request that grows with input length, not a useful classifier.
"""

from __future__ import annotations

import json
import math
import re
import zlib
from dataclasses import dataclass

import numpy as np

VOCAB_SIZE = 8192
PAD_ID = 0
CLS_ID = 1  # prepended to every input; also keeps empty texts well defined
PAD_BUCKET = 16  # pad to a multiple of this, as batching servers do, to bound shapes
LABELS = (
    "billing", "shipping", "returns", "account", "technical", "sales", "feedback",
    "cancellation", "privacy", "fraud", "warranty", "installation", "pricing",
    "availability", "complaint", "other",
)  # fmt: skip

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True, slots=True)
class Encoded:
    """One tokenized input: padded ids, how many of them are real, and the words."""

    ids: np.ndarray  # int64, shape (padded_len,)
    length: int  # real tokens, CLS included
    words: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Layer:
    """Weights of one transformer-style block."""

    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    w1: np.ndarray
    w2: np.ndarray


@dataclass(frozen=True, slots=True)
class Weights:
    """The whole model: embedding table, blocks, classification head."""

    embed: np.ndarray
    layers: tuple[Layer, ...]
    w_out: np.ndarray
    heads: int


def build_weights(seed: int = 1234, dim: int = 256, layers: int = 4, heads: int = 4) -> Weights:
    """Draw all weights from ``seed``; same seed, same model, same answers."""
    rng = np.random.default_rng(seed)

    def dense(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) / math.sqrt(rows)).astype(np.float32)

    blocks = tuple(
        Layer(dense(dim, dim), dense(dim, dim), dense(dim, dim), dense(dim, dim),
              dense(dim, 4 * dim), dense(4 * dim, dim))
        for _ in range(layers)
    )  # fmt: skip
    embed = rng.standard_normal((VOCAB_SIZE, dim)).astype(np.float32)
    return Weights(embed, blocks, dense(dim, len(LABELS)), heads)


# -- preprocess ---------------------------------------------------------------------


def preprocess_tokenize(text: str, max_tokens: int) -> tuple[str, ...]:
    """Lower-case word split, truncated so that CLS plus the words fit ``max_tokens``."""
    return tuple(m.group(0) for m in _WORD.finditer(text.lower()))[: max_tokens - 1]


def preprocess_to_ids(words: tuple[str, ...]) -> list[int]:
    """Hash each word into the vocabulary; crc32 because ``hash()`` is salted per process."""
    reserved = CLS_ID + 1
    return [CLS_ID] + [reserved + zlib.crc32(w.encode()) % (VOCAB_SIZE - reserved) for w in words]


def preprocess_pad(ids: list[int]) -> np.ndarray:
    """Pad with PAD_ID up to the next multiple of PAD_BUCKET."""
    padded = -(-len(ids) // PAD_BUCKET) * PAD_BUCKET
    out = np.full(padded, PAD_ID, dtype=np.int64)
    out[: len(ids)] = ids
    return out


def preprocess(text: str, max_tokens: int) -> Encoded:
    """Text to padded ids."""
    words = preprocess_tokenize(text, max_tokens)
    ids = preprocess_to_ids(words)
    return Encoded(preprocess_pad(ids), len(ids), words)


# -- model --------------------------------------------------------------------------


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    out: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return out


def _layer_norm(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    out: np.ndarray = (x - mean) / np.sqrt(x.var(axis=-1, keepdims=True) + 1e-5)
    return out


def model_attention(x: np.ndarray, layer: Layer, heads: int, mask: np.ndarray) -> np.ndarray:
    """Multi-head self-attention over all heads at once; padding keys are masked out."""
    seq, dim = x.shape
    split = (seq, heads, dim // heads)
    q = (x @ layer.wq).reshape(split).transpose(1, 0, 2)
    k = (x @ layer.wk).reshape(split).transpose(1, 0, 2)
    v = (x @ layer.wv).reshape(split).transpose(1, 0, 2)
    scores = q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(dim // heads))
    scores = np.where(mask[None, None, :], scores, np.float32(-1e9))
    ctx = (_softmax(scores) @ v).transpose(1, 0, 2).reshape(seq, dim)
    out: np.ndarray = ctx @ layer.wo
    return out


def model_feed_forward(x: np.ndarray, layer: Layer) -> np.ndarray:
    """Position-wise MLP, 4x wide, ReLU."""
    out: np.ndarray = np.maximum(x @ layer.w1, 0) @ layer.w2
    return out


def model_pool_and_classify(x: np.ndarray, weights: Weights, mask: np.ndarray) -> np.ndarray:
    """Mean over the real tokens, then the linear head: one logit per label."""
    pooled = x[mask].mean(axis=0)
    logits: np.ndarray = (pooled @ weights.w_out).astype(np.float32)
    return logits


def model_forward(weights: Weights, enc: Encoded) -> np.ndarray:
    """Embedding lookup, the blocks, the head. Cost grows with the padded length."""
    mask = enc.ids != PAD_ID
    x = weights.embed[enc.ids]
    for layer in weights.layers:
        x = _layer_norm(x + model_attention(x, layer, weights.heads, mask))
        x = _layer_norm(x + model_feed_forward(x, layer))
    return model_pool_and_classify(x, weights, mask)


def model_attention_per_head_f64(
    x: np.ndarray, layer: Layer, heads: int, mask: np.ndarray
) -> np.ndarray:
    """The same attention as model_attention, one head at a time, in float64.

    This is the kind of regression a release ships by accident (an unfused kernel,
    an upcast): the answer is unchanged, the cost is several times higher.
    """
    x64 = x.astype(np.float64)
    dim = x.shape[1]
    hd = dim // heads
    out = np.zeros_like(x64)
    for h in range(heads):
        cols = slice(h * hd, (h + 1) * hd)
        q = x64 @ layer.wq[:, cols].astype(np.float64)
        k = x64 @ layer.wk[:, cols].astype(np.float64)
        v = x64 @ layer.wv[:, cols].astype(np.float64)
        scores = np.where(mask[None, :], q @ k.T / math.sqrt(hd), -1e9)
        out[:, cols] = _softmax(scores) @ v
    return (out @ layer.wo.astype(np.float64)).astype(np.float32)


def model_forward_slow(weights: Weights, enc: Encoded) -> np.ndarray:
    """model_forward with the per-head float64 attention: the "slow version" switch."""
    mask = enc.ids != PAD_ID
    x = weights.embed[enc.ids]
    for layer in weights.layers:
        x = _layer_norm(x + model_attention_per_head_f64(x, layer, weights.heads, mask))
        w1, w2 = layer.w1.astype(np.float64), layer.w2.astype(np.float64)
        x = _layer_norm(x + (np.maximum(x @ w1, 0) @ w2).astype(np.float32))
    return model_pool_and_classify(x, weights, mask)


# -- postprocess --------------------------------------------------------------------


def postprocess_softmax(logits: np.ndarray) -> np.ndarray:
    """Logits to probabilities."""
    return _softmax(logits.astype(np.float64))


def postprocess_top_k(probs: np.ndarray, k: int) -> list[dict[str, object]]:
    """The k most likely labels, best first."""
    order = np.argsort(-probs)[:k]
    return [{"label": LABELS[i], "score": round(float(probs[i]), 6)} for i in order]


def postprocess_render_json(probs: np.ndarray, enc: Encoded, k: int) -> dict[str, object]:
    """The response body (as a dict; the server serialises it)."""
    return {"labels": postprocess_top_k(probs, k), "tokens": enc.length}


def postprocess_token_attributions(
    enc: Encoded, weights: Weights, label: int
) -> list[tuple[str, float]]:
    """Per-word contribution to one label, in pure Python: deliberately slow.

    Walking every embedding coordinate in interpreted code is what makes this path
    costly, and its cost grows with the input length, as the real thing would.
    """
    column = [float(v) for v in weights.w_out[:, label]]
    scored = []
    for pos, word in enumerate(enc.words, start=1):
        row = weights.embed[int(enc.ids[pos])].tolist()
        scored.append((word, sum(a * b for a, b in zip(row, column))))
    scored.sort(key=lambda item: -abs(item[1]))
    return [(w, round(s, 4)) for w, s in scored[:3]]


def postprocess_render_json_costly(
    probs: np.ndarray, enc: Encoded, weights: Weights, k: int
) -> dict[str, object]:
    """postprocess_render_json plus the words behind each label: the costly switch.

    Attributions are computed for every label, not only the k returned (as an
    explanation feature that contrasts the chosen labels with the rest would), which is
    what makes this path several times costlier than the forward pass's share.
    """
    body = postprocess_render_json(probs, enc, k)
    table = [postprocess_token_attributions(enc, weights, i) for i in range(len(LABELS))]
    for entry in body["labels"]:  # type: ignore[attr-defined]
        label = LABELS.index(entry["label"])
        entry["explanation"] = [{"word": w, "weight": s} for w, s in table[label]]
    # A pretty, key-sorted round trip, as a "validate before sending" step would do.
    checked: dict[str, object] = json.loads(json.dumps(body, indent=2, sort_keys=True))
    return checked
