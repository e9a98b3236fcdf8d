"""The JSON-prefix checker behind the local tier's JSON mode: every prefix of a valid object is accepted, every
prefix closes (with `closing_suffix`) into JSON that parses and holds the required keys, and broken text is
refused. Pure Python, no model."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from tiergate.tiers.json_prefix import JsonPrefix


def _value(rng: random.Random, depth: int) -> Any:
    r = rng.random()
    if depth > 3 or r < 0.4:
        return rng.choice([0, -1.5e3, 12, 3.25, True, False, None, 'a"b\\c\u00e9\n', "", "x y", 1e-7])
    if r < 0.7:
        return [_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{i}": _value(rng, depth + 1) for i in range(rng.randint(0, 3))}


def _objects(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        obj = {f"k{i}": _value(rng, 1) for i in range(rng.randint(0, 4))}
        out.append(json.dumps(obj, indent=rng.choice([None, 2]), ensure_ascii=rng.random() < 0.5))
    return out


def test_every_prefix_is_accepted_and_closes_into_json() -> None:
    for text in _objects(0, 150):
        checker = JsonPrefix()
        for i, ch in enumerate(text):
            assert checker.feed(ch), (text, i)
            assert isinstance(json.loads(text[: i + 1] + checker.closing_suffix()), dict)
        assert checker.done and checker.closing_suffix() == ""


def test_required_keys_block_closing_and_are_filled_in() -> None:
    rng = random.Random(1)
    for text in _objects(2, 150):
        required = set(rng.sample(["k0", "k1", "zz", "k\u00e9"], rng.randint(0, 2)))
        checker = JsonPrefix(required)
        for i, ch in enumerate(text):
            if not checker.feed(ch):  # only the final `}` of an object that lacks a required key
                assert i == len(text) - 1 and not required <= set(json.loads(text))
                break
            assert required <= set(json.loads(text[: i + 1] + checker.closing_suffix()))
    assert not JsonPrefix(["city"]).feed("{}")
    assert JsonPrefix(["city"]).closing_suffix() == '{"city":null}'


@pytest.mark.parametrize("bad", [
    "[", " {", '{"a" 1}', '{"a":01}', "{,}", '{"a":1,}', '{"a":tru}', "{} x", '{"a":"\x01"}', '{"a":1.}',
    '{"a":[1,]}', '{"a"}', '{"a":-}', '{"a":1e}', '{"a":"\\x"}', "{'a':1}", '{"a":1]',
])
def test_broken_text_is_refused(bad: str) -> None:
    checker = JsonPrefix()
    assert not (checker.feed(bad) and checker.done)


def test_accepts_does_not_change_the_state() -> None:
    checker = JsonPrefix()
    checker.feed('{"a": [1, tr')
    assert checker.accepts("ue]}") and not checker.accepts("}")
    assert checker.closing_suffix() == "ue]}"
