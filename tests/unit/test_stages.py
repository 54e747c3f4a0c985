"""Pipeline stages (collector/analysis/stages.py): which stage a stack belongs to, each
stage's share and time per request, and the user's rules file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyrometer.agent.shared.model import Frame
from pyrometer.collector.analysis import stages
from pyrometer.collector.analysis.stages import (
    DEFAULT_RULES,
    OTHER,
    SERVING,
    WAITING,
    StageConfigError,
    classify,
    compare,
    load_rules,
    split,
    summary,
)

SERVE = (Frame("serve_forever", "socketserver.py"), Frame("handle", "uvicorn/protocols/http.py"),
         Frame("predict", "app/server.py"))


def stack(*frames: tuple[str, str]) -> tuple[Frame, ...]:
    return SERVE + tuple(Frame(name, file) for name, file in frames)


@pytest.mark.parametrize(("frames", "stage"), [
    # Hugging Face: a fast tokenizer, a model's forward pass through torch modules
    ([("PreTrainedTokenizerBase.__call__", "transformers/tokenization_utils_base.py"),
      ("PreTrainedTokenizerFast._batch_encode_plus", "transformers/tokenization_utils_fast.py")],
     "tokenization"),
    ([("Module._call_impl", "torch/nn/modules/module.py"),
      ("BertModel.forward", "transformers/models/bert/modeling_bert.py"),
      ("Linear.forward", "torch/nn/modules/linear.py")], "forward pass"),
    # numpy called from a forward pass is the forward pass, not "numpy"
    ([("model_forward", "inference.py"), ("model_attention", "inference.py"),
      ("softmax", "numpy/core/fromnumeric.py")], "forward pass"),
    ([("preprocess", "inference.py"), ("preprocess_tokenize", "inference.py")], "tokenization"),
    ([("preprocess", "inference.py"), ("preprocess_pad", "inference.py")], "pre-processing"),
    ([("postprocess_render_json", "inference.py"), ("dumps", "json/__init__.py")],
     "post-processing"),
    ([("Compose.__call__", "torchvision/transforms/transforms.py")], "pre-processing"),
    ([("loads", "json/__init__.py"), ("JSONDecoder.decode", "json/decoder.py")], SERVING),
    ([("lookup_user", "app/db.py")], OTHER),
    ([("model_forward", "inference.py"), ("SocketIO.readinto", "socket.py")], WAITING),
])  # fmt: skip
def test_each_stack_goes_to_one_stage(frames: list[tuple[str, str]], stage: str) -> None:
    assert classify(stack(*frames), DEFAULT_RULES) == stage


def test_shares_sum_to_the_window_and_time_per_request_uses_the_period() -> None:
    samples = [(stack(("model_forward", "inference.py")), 600),
               (stack(("preprocess_tokenize", "inference.py")), 150),
               (stack(("postprocess_top_k", "inference.py")), 50),
               (stack(("SocketIO.readinto", "socket.py")), 200)]
    result = split(samples, requests=100, rate_hz=100.0, rules=DEFAULT_RULES)
    by = result.by_stage()
    assert result.samples == 1000 and math.isclose(sum(s.share for s in result.stages), 1.0)
    assert [s.stage for s in result.stages][:2] == ["forward pass", WAITING]
    assert by["forward pass"].ms_per_request == 60.0  # 600 samples x 10 ms / 100 requests
    assert by["tokenization"].share == 0.15
    assert math.isnan(split(samples, 0, 100.0, DEFAULT_RULES).stages[0].ms_per_request)


def test_two_windows_sharing_stacks_classify_each_stack_once_with_the_same_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forward, tokenize, wait = (stack(("model_forward", "inference.py")),
                               stack(("preprocess_tokenize", "inference.py")),
                               stack(("SocketIO.readinto", "socket.py")))
    baseline = [(forward, 500), (tokenize, 300), (wait, 200)]
    twin = stack(("model_forward", "inference.py"))  # equal to forward, another object
    assert twin == forward and twin is not forward
    spike = [(forward, 900), (wait, 100), (twin, 50)]
    alone = (split(baseline, 100, 100.0, DEFAULT_RULES), split(spike, 100, 100.0, DEFAULT_RULES))
    calls: list[tuple[Frame, ...]] = []

    def counting(stack_: tuple[Frame, ...], rules: object, functions: object = None) -> str:
        calls.append(stack_)
        return classify(stack_, DEFAULT_RULES)

    monkeypatch.setattr(stages, "classify", counting)
    classified = stages.Classified()
    shared = (split(baseline, 100, 100.0, DEFAULT_RULES, classified),
              split(spike, 100, 100.0, DEFAULT_RULES, classified))
    assert shared == alone
    # baseline's three stacks, then only the spike's object not seen before
    assert [c is twin for c in calls] == [False, False, False, True]


def test_the_summary_names_what_moved_and_what_stayed_flat() -> None:
    def window(forward: int, tokenize: int, requests: int) -> object:
        return split([(stack(("model_forward", "inference.py")), forward),
                      (stack(("preprocess_tokenize", "inference.py")), tokenize)],
                     requests, 100.0, DEFAULT_RULES)

    changes = compare(window(400, 100, 100), window(1160, 205, 200))  # type: ignore[arg-type]
    assert changes[0].stage == "forward pass" and changes[0].delta_ms == pytest.approx(18.0)
    assert summary(changes) == "forward pass +18.0 ms per request, tokenization flat"


def test_user_rules_come_first_and_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "stages.json"
    path.write_text(json.dumps({"stages": [{"stage": "retrieval", "function": "knn_search"},
                                           {"stage": "forward pass", "file": "my_model/"}]}))
    rules = load_rules(path)
    assert rules[2:] == DEFAULT_RULES
    assert classify(stack(("knn_search", "app/index.py")), rules) == "retrieval"
    # a user rule that names a function inside a default stage's frames wins
    assert classify(stack(("knn_search", "app/index.py"), ("Linear.forward", "torch/nn/linear.py")),
                    rules) == "retrieval"
    for text, message in [
        ("{", "is not JSON"), ('{"rules": []}', 'expected {"stages"'),
        ('{"stages": [{"function": "x"}]}', 'rule 1: needs a "stage"'),
        ('{"stages": [{"stage": "x"}]}', "rule 1: stage rule for 'x' names neither"),
        ('{"stages": [{"stage": "x", "function": "("}]}', "rule 1: bad regular expression"),
        ('{"stages": [{"stage": "x", "func": "a"}]}', "unknown keys ['func']"),
        ('{"stages": [{"stage": "x", "file": 3}]}', "file must be a regular expression"),
    ]:
        path.write_text(text)
        with pytest.raises(StageConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
            load_rules(path)
    with pytest.raises(StageConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.json")


_names = st.sampled_from(["model_forward", "preprocess", "preprocess_tokenize", "tokenize",
                          "postprocess", "handle", "loads", "Linear.forward", "SocketIO.readinto"])
_files = st.sampled_from(["inference.py", "torch/nn/linear.py", "json/__init__.py", "socket.py",
                          "tokenizers/implementations/base.py", "app/db.py", ""])
_stacks = st.lists(st.lists(st.tuples(_names, _files), max_size=6), max_size=12)


@given(_stacks)
def test_a_function_memo_shared_across_stacks_classifies_as_the_rules_read(
        stacks: list[list[tuple[str, str]]]) -> None:
    functions: dict[tuple[str, str], int] = {}
    for frames in stacks:
        s = stack(*frames)
        # the definition: the first rule that any frame matches, before the fallbacks
        by_rules = next((r.stage for r in DEFAULT_RULES if any(r.matches(f) for f in s)), None)
        got = classify(s, DEFAULT_RULES, functions)
        assert got == classify(s, DEFAULT_RULES)
        if s and got != WAITING:
            assert got == (by_rules or got)
            assert by_rules is not None or got in (SERVING, OTHER)
