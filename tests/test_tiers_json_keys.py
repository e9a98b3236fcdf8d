"""JSON mode must not answer with duplicate keys, nor with an empty placeholder key when the token budget runs
out right after a comma. SmolLM2 in json_schema mode looped `{"name":"cat","age":"12","age":"12","name":"dog",
...,"":null}`: a parser keeps the last of each duplicate (here the wrong animal) and the invented "" key. Pure
Python: the checker, and the decoding row driven by scripted logits over a character vocabulary."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest

from tiergate.tiers.json_prefix import JsonPrefix


def _pairs_unique(text: str) -> Any:
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"duplicate keys in {text!r}"
        return dict(pairs)

    return json.loads(text, object_pairs_hook=hook)


@pytest.mark.parametrize("text", ['{"a":1,"a"', '{"x":{"b":1,"b"', '{"a":1,"\\u0061"', '{"x":[{"k":1,"k"'])
def test_a_repeated_key_in_one_object_is_refused(text: str) -> None:
    assert not JsonPrefix().feed(text)
    assert JsonPrefix().feed(text[:-1])  # up to the closing quote the key could still become another one


def test_the_same_key_in_different_objects_is_fine() -> None:
    text = '{"a":{"a":1,"b":{"a":2}},"b":[{"a":1},{"a":2}],"c":"a"}'
    checker = JsonPrefix()
    assert checker.feed(text) and checker.done


@pytest.mark.parametrize("prefix", ['{"":1,', '{"x":{"":1,', '{"x":{"":1,"_":2,', '{"a":1,', '{"a":[1,',
                                    '{"a":1,"a', '{"a":1,"a_":2,"a', '{"\\u00e9":1,"\\u00', '{"x":{"b":1,"b'])
def test_closing_never_repeats_a_key(prefix: str) -> None:
    checker = JsonPrefix()
    assert checker.feed(prefix)
    _pairs_unique(prefix + checker.closing_suffix())


# -- the decoding row ---------------------------------------------------------------------------------------------

VOCAB = ["<eos>", ",", '"a"', ":", '"cat"', "1", "}", '"', "{", "]", "[", " ", "null", '","', '":"',
         *sorted(set(string.ascii_lowercase + string.digits + "_") - {"1"})]
"""Pieces ranked by the scripted model in this order at every step (its favourite first): it loves commas and
the key "a", like SmolLM2 looping over the keys it already wrote."""


class CharTokenizer:
    """Greedy longest-match over VOCAB; enough of a tokenizer for RequestRow."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            best = max((j for j, p in enumerate(VOCAB) if j and text.startswith(p, i)), key=lambda j: len(VOCAB[j]))
            ids.append(best)
            i += len(VOCAB[best])
        return ids

    def decode(self, ids: list[int], **_: Any) -> str:
        return "".join(VOCAB[i] for i in ids if i)


def _run_row(max_tokens: int, required: tuple[str, ...] = ()) -> tuple[str, str, int]:
    import torch

    from tiergate.tiers.lm_request import RequestRow, SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=0, json=True, json_required=required)
    row = RequestRow([1], params, None, streaming=False, tokenizer=CharTokenizer(),  # type: ignore[arg-type]
                     piece=lambda i: VOCAB[i], eos_ids=frozenset({0}), special_ids=frozenset({0}))
    logits = torch.tensor([float(len(VOCAB) - i) for i in range(len(VOCAB))])
    logprobs = torch.log_softmax(logits, -1)
    while not row.finished:
        row.step(logits, logprobs)
    result = row.result()
    return result.text, result.finish_reason, result.completion_tokens


@pytest.mark.parametrize("required", [(), ("a",), ("zz",)])
def test_json_answers_hold_no_repeated_or_invented_keys_at_any_budget(required: tuple[str, ...]) -> None:
    for max_tokens in range(1, 40):
        text, reason, tokens = _run_row(max_tokens, required)
        obj = _pairs_unique(text)
        assert isinstance(obj, dict) and set(required) <= set(obj), text
        assert '"":null' not in text, (max_tokens, text)  # no key invented to close a trailing comma
        assert tokens <= max(max_tokens, len(CharTokenizer().encode(JsonPrefix(required).closing_suffix()))), text
        assert reason in ("stop", "length")
