"""Model servers that time their own pipeline stages by hand, for the stage check.

Run by path (tests/integration/test_stages_check.py starts it)::

    python tests/support/stage_targets.py demo|onnx|transformers|transformers-cuda --timings FILE

`demo` is the project's demo model server (deploy/demo) as `pyrometer demo` runs it;
`onnx` is a sentence-embedding server on real ML libraries: a Hugging Face `tokenizers`
BPE tokenizer trained in this process on built-in text, and a small transformer encoder
built in code as an ONNX graph with random weights and run by onnxruntime.
`transformers` is the same server on Hugging Face transformers and torch: that tokenizer
behind transformers' `PreTrainedTokenizerFast`, and a two-layer `BertModel` built from a
`BertConfig` with random weights, on the CPU (`transformers-cuda`: on the first GPU).
Nothing is downloaded. All serve over the demo's threaded wsgiref server, reporting each
request through Pyrometer's WSGI middleware when PYROMETER_REQUESTS_ADDR is set.

The hand timing: `time.perf_counter` around each stage's code, around each request
thread's whole life and around the acceptor's work on each connection, summed per stage
as *exclusive* time (a region's time less the regions inside it), so that the stages add
up to the server's whole time on requests, as a profile's samples add up to its window.
What the server did outside the pipeline (accepting, reading the request, routing, JSON,
writing the reply, reporting it to the agent) is the serving framework's time.
On SIGTERM the server stops, and the totals are written to FILE as JSON: a file at exit,
not an endpoint, because a request for the figures would itself be served, sampled and
timed, and because only at exit are both the timing and the profile final.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

# one thread each: tokenizers' Rust thread pool and onnxruntime's run on native threads
# that py-spy cannot see (the request thread waits for them, not sampled), and on two
# cores they would only fight the request threads
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

DEMO = Path(__file__).resolve().parents[2] / "deploy" / "demo"
sys.path.insert(0, str(DEMO))

import model_server  # noqa: E402  (deploy/demo, on the path just above)

F = TypeVar("F", bound=Callable[..., Any])
SERVING = "serving framework"


class StageClock:
    """Exclusive perf_counter time per stage, summed over all threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = {}
        self._inner = threading.local()  # per thread: the time of the regions inside each open one
        self.requests = 0

    def region(self, stage: str, fn: F, *, per_request: bool = False) -> F:
        """fn, with its time (less that of the regions inside it) counted to `stage`;
        `per_request`: each call is one request."""

        def clocked(*args: Any, **kwargs: Any) -> Any:
            inner: list[float] = self._inner.__dict__.setdefault("stack", [])
            inner.append(0.0)
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                took = time.perf_counter() - started
                own = took - inner.pop()
                if inner:
                    inner[-1] += took
                with self._lock:
                    self._seconds[stage] = self._seconds.get(stage, 0.0) + own
                    self.requests += per_request

        return clocked  # type: ignore[return-value]

    def write(self, path: Path, target: str) -> None:
        with self._lock:
            doc = {"target": target, "requests": self.requests, "seconds": dict(self._seconds)}
        path.write_text(json.dumps(doc, indent=2))


CLOCK = StageClock()
# The server's threads' work on each request: the acceptor's accept and start of a request
# thread (it waits until the thread runs), and the request thread's life, from its first
# line to its socket's close. The acceptor's idle polls are left out: py-spy sees little
# of them (a sleeping thread is not sampled), perf_counter would count all of their time.
_server = model_server.ThreadingWSGIServer
_server._handle_request_noblock = CLOCK.region(  # type: ignore[method-assign]
    SERVING, _server._handle_request_noblock)
_server.process_request_thread = CLOCK.region(  # type: ignore[method-assign]
    SERVING, _server.process_request_thread, per_request=True)


def run_demo() -> None:
    """The demo model server, its stage functions timed (deploy/demo/inference.py)."""
    import inference

    for name, stage in (("preprocess", "pre-processing"), ("preprocess_tokenize", "tokenization"),
                        ("model_forward", "forward pass"), ("postprocess_softmax", "post-processing"),
                        ("postprocess_render_json", "post-processing")):
        setattr(inference, name, CLOCK.region(stage, getattr(inference, name)))
    model_server.main(["--host", "127.0.0.1", "--port", "0", "--workers", "1"])


# -- the real-ML target -----------------------------------------------------------------

DIM, LAYERS, MAX_TOKENS, VOCAB = 96, 2, 64, 2000
CORPUS = (__doc__ or "") + (model_server.__doc__ or "")


def build_tokenizer() -> Any:
    from tokenizers import ByteLevelBPETokenizer

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(CORPUS.splitlines() * 4, vocab_size=VOCAB, show_progress=False)
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="<pad>")
    return tokenizer


def build_encoder(seed: int = 1234) -> bytes:
    """A transformer encoder (embedding, single-head self-attention and MLP blocks, layer
    norms) as an ONNX graph with random weights: input_ids, attention_mask -> hidden."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    consts: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: Any) -> str:
        consts.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name: str, *shape: int) -> str:
        return const(name, (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32))

    def op(kind: str, *inputs: str, **attrs: Any) -> str:
        out = f"{kind.lower()}{len(nodes)}"
        nodes.append(helper.make_node(kind, list(inputs), [out], **attrs))
        return out

    def norm(x: str, n: str) -> str:
        return op("LayerNormalization", x, const(f"{n}s", np.ones(DIM, np.float32)),
                  const(f"{n}b", np.zeros(DIM, np.float32)), axis=-1)

    x = op("Gather", weight("embed", VOCAB, DIM), "input_ids")
    # padding keys get -1e4 before the softmax: (mask - 1) * 1e4, one row per batch item
    keep = op("Cast", "attention_mask", to=TensorProto.FLOAT)
    bias = op("Mul", op("Sub", keep, const("one", np.float32(1))), const("big", np.float32(1e4)))
    bias = op("Unsqueeze", bias, const("axis1", np.array([1], np.int64)))
    for n in range(LAYERS):
        q, k, v = (op("MatMul", x, weight(f"w{p}{n}", DIM, DIM)) for p in "qkv")
        scores = op("Add", op("MatMul", q, op("Transpose", k, perm=[0, 2, 1])), bias)
        attended = op("MatMul", op("Softmax", scores, axis=-1), v)
        x = norm(op("Add", x, op("MatMul", attended, weight(f"wo{n}", DIM, DIM))), f"ln1{n}")
        hidden = op("Relu", op("MatMul", x, weight(f"w1{n}", DIM, 4 * DIM)))
        x = norm(op("Add", x, op("MatMul", hidden, weight(f"w2{n}", 4 * DIM, DIM))), f"ln2{n}")
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "seq"])
              for name in ("input_ids", "attention_mask")]
    output = helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", "seq", DIM])
    graph = helper.make_graph(nodes, "encoder", inputs, [output], consts)
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
                 .SerializeToString())


class EmbeddingApp:
    """POST {"texts": [...]} -> {"embeddings": [[...], ...]}: sentence embeddings, as a
    sentence-transformers server answers (tokenize, encode, mean-pool, normalise)."""

    def __init__(self) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.tokenizer = build_tokenizer()
        self.session = onnxruntime.InferenceSession(build_encoder(), options,
                                                    providers=["CPUExecutionProvider"])
        self.encode = CLOCK.region("tokenization", self.tokenizer.encode_batch)
        self.prepare = CLOCK.region("pre-processing", prepare_inputs)
        self.run = CLOCK.region("forward pass", self.session.run)
        self.pool = CLOCK.region("post-processing", postprocess_embeddings)

    def embed(self, texts: list[str]) -> list[list[float]]:
        ids, mask = self.prepare(self.encode(texts))
        (hidden,) = self.run(None, {"input_ids": ids, "attention_mask": mask})
        return self.pool(hidden, mask)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        texts = json.loads(environ["wsgi.input"].read(length))["texts"]
        data = json.dumps({"embeddings": self.embed(texts)}).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(data)))])
        return [data]


class TorchEmbeddingApp(EmbeddingApp):
    """The same server on transformers and torch: tokenizer, model and pooling as a
    sentence-transformers model runs them. On a GPU the forward pass only queues its
    kernels; pooling's copy back to the host waits for them, so by hand and sampled alike
    that wait is post-processing's (py-spy sees the thread in the copy, spinning)."""

    def __init__(self, device: str) -> None:  # not EmbeddingApp's: that builds the ONNX model
        import torch
        from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
        self.device = device
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer()._tokenizer,
                                                 pad_token="<pad>")
        torch.manual_seed(1234)
        config = BertConfig(vocab_size=VOCAB, hidden_size=DIM, num_hidden_layers=LAYERS,
                            num_attention_heads=2, intermediate_size=4 * DIM,
                            max_position_embeddings=2 * MAX_TOKENS)
        self.model = BertModel(config).eval().to(device)
        self.encode = CLOCK.region("tokenization", self.tokenize)
        self.prepare = CLOCK.region("pre-processing", self.prepare_inputs)
        self.run = CLOCK.region("forward pass", self.model)
        self.pool = CLOCK.region("post-processing", postprocess_torch_embeddings)

    def tokenize(self, texts: list[str]) -> Any:
        return self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS,
                              return_tensors="pt")

    def prepare_inputs(self, batch: Any) -> dict[str, Any]:
        return {name: batch[name].to(self.device) for name in ("input_ids", "attention_mask")}

    def warm_up(self) -> None:
        """A few requests' work, unclocked (on a GPU: the context, the kernels' first launches)."""
        import torch

        for _ in range(3):
            inputs = self.prepare_inputs(self.tokenize(["a warm-up sentence"] * 16))
            with torch.inference_mode():
                postprocess_torch_embeddings(self.model(**inputs).last_hidden_state,
                                             inputs["attention_mask"])

    def embed(self, texts: list[str]) -> list[list[float]]:
        import torch

        inputs = self.prepare(self.encode(texts))
        with torch.inference_mode():
            hidden = self.run(**inputs).last_hidden_state
        return self.pool(hidden, inputs["attention_mask"])


def postprocess_torch_embeddings(hidden: Any, mask: Any) -> list[list[float]]:
    """Mean pooling and unit length in torch, then the copy back to the host."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    unit = torch.nn.functional.normalize(pooled, dim=1).cpu().tolist()
    return [[round(float(v), 5) for v in row] for row in unit]


def prepare_inputs(encodings: list[Any]) -> tuple[Any, Any]:
    import numpy as np

    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    return ids, np.array([e.attention_mask for e in encodings], dtype=np.int64)


def postprocess_embeddings(hidden: Any, mask: Any) -> list[list[float]]:
    """Mean over the real tokens, then unit length, as sentence-transformers pools."""
    import numpy as np

    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return [[round(float(v), 5) for v in row] for row in unit]


def run_onnx() -> None:
    app = EmbeddingApp()
    app.session.run(None, {"input_ids": [[1, 2, 3]], "attention_mask": [[1, 1, 1]]})  # warm up
    serve(app)


def run_transformers(device: str) -> None:
    app = TorchEmbeddingApp(device)
    app.warm_up()
    serve(app)


def serve(app: EmbeddingApp) -> None:
    """The embedding app behind the demo's threaded server until SIGTERM."""
    from wsgiref.simple_server import make_server

    from pyrometer.agent.middleware import PyrometerWSGIMiddleware

    wrapped = PyrometerWSGIMiddleware(app) if os.environ.get("PYROMETER_REQUESTS_ADDR") else app
    server = make_server("127.0.0.1", 0, wrapped, server_class=model_server.ThreadingWSGIServer,
                         handler_class=model_server.QuietHandler)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="http-acceptor", daemon=True).start()
    print(f"embedding-server listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    while not stop.wait(1.0):
        pass
    server.shutdown()
    server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("target", choices=("demo", "onnx", "transformers", "transformers-cuda"))
    parser.add_argument("--timings", type=Path, required=True, help="JSON written at exit")
    args = parser.parse_args()
    if args.target == "demo":
        run_demo()
    elif args.target == "onnx":
        run_onnx()
    else:
        run_transformers("cuda" if args.target == "transformers-cuda" else "cpu")
    CLOCK.write(args.timings, args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
