"""Reading an OpenAI chat-completions body for an in-process tier: what it cannot honour, its text messages,
and its sampling parameters.

    reject_unsupported(body)                 # InvalidRequest(param=...) for tools, n>1, logit_bias, images...
    messages = text_messages(body)           # [{"role": "system" | "user" | "assistant", "content": str}]
    params = sampling_params(body, max_new_tokens=256)

An in-process model must refuse what it would silently ignore (a caller that sends tools expects tool calls),
and must do so before any work, so the gateway can answer 400 or route the request elsewhere. Fields that change
nothing about the answer (user, metadata, store, service_tier, stream_options...) are accepted and ignored.
"""

from __future__ import annotations

import json
from typing import Any

from tiergate.errors import InvalidRequest
from tiergate.tiers.lm_request import SamplingParams

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_TEXT_PARTS = {"text", "input_text"}
MAX_STOP = 4


def _absent(value: Any) -> bool:
    return value is None or value == [] or value == {} or value == "none"


def reject_unsupported(body: dict[str, Any], *, allow_logprobs: bool = True) -> None:
    """Raise InvalidRequest, naming the field, for anything a local text model cannot honour."""
    for key in ("tools", "tool_choice", "functions", "function_call"):
        if not _absent(body.get(key)):
            raise InvalidRequest(f"{key} is not supported by this local model tier", param=key)
    for key in ("audio", "prediction", "web_search_options"):
        if body.get(key) is not None:
            raise InvalidRequest(f"{key} is not supported by this local model tier", param=key)
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise InvalidRequest("only the text modality is supported by this local model tier", param="modalities")
    if body.get("logit_bias"):
        raise InvalidRequest("logit_bias is not supported by this local model tier", param="logit_bias")
    for key in ("presence_penalty", "frequency_penalty"):
        value = body.get(key)
        if value is not None and _number(value, key) != 0:
            raise InvalidRequest(f"{key} is not supported by this local model tier (only 0)", param=key)
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("n > 1 is not supported by this local model tier", param="n")
    if body.get("logprobs") not in (None, False, True):
        raise InvalidRequest("logprobs must be a boolean", param="logprobs")
    if body.get("logprobs") and not allow_logprobs:
        raise InvalidRequest("logprobs are not supported by this tier", param="logprobs")
    if body.get("top_logprobs") is not None and not body.get("logprobs"):
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    response_format = body.get("response_format")
    if response_format is not None:
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind not in ("text", "json_object", "json_schema"):
            raise InvalidRequest("response_format.type must be text, json_object or json_schema",
                                 param="response_format")
        if kind == "json_schema" and not isinstance(response_format.get("json_schema"), dict):
            raise InvalidRequest("response_format.json_schema must be an object", param="response_format")


def text_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    """The conversation as plain-text messages for a chat template; refuses images, audio and tool turns."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    out: list[dict[str, str]] = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidRequest("each message must be an object", param=f"messages[{i}]")
        role = _ROLES.get(str(msg.get("role")))
        if role is None:
            raise InvalidRequest(f"message role {msg.get('role')!r} is not supported by this local model tier",
                                 param=f"messages[{i}].role")
        for key in ("tool_calls", "function_call", "audio"):
            if msg.get(key):
                raise InvalidRequest(f"{key} in messages is not supported by this local model tier",
                                     param=f"messages[{i}].{key}")
        out.append({"role": role, "content": _content_text(msg.get("content"), i, role)})
    return out


def _content_text(content: Any, i: int, role: str) -> str:
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":
        return ""
    if not isinstance(content, list):
        raise InvalidRequest("message content must be a string or a list of parts", param=f"messages[{i}].content")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in _TEXT_PARTS or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"content part of type {kind!r} is not supported by this local model tier "
                                 "(text only)", param=f"messages[{i}].content[{j}]")
        texts.append(part["text"])
    return "\n".join(texts)


def _number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{param} must be a number", param=param)
    return float(value)


def _max_tokens(body: dict[str, Any], cap: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequest(f"{key} must be a positive integer", param=key)
        return min(value, cap)
    return cap


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(s, str) and s for s in stop):
        raise InvalidRequest(f"stop must be a non-empty string or a list of up to {MAX_STOP} of them",
                             param="stop")
    return tuple(stop)


def sampling_params(body: dict[str, Any], *, max_new_tokens: int) -> SamplingParams:
    """The body's decoding settings; max_tokens / max_completion_tokens are capped at `max_new_tokens`."""
    temperature = body.get("temperature")
    top_p = body.get("top_p")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest("seed must be an integer", param="seed")
    if seed is not None and not -(2**63) <= seed < 2**64:  # what torch.Generator.manual_seed takes
        raise InvalidRequest("seed must be a 64-bit integer", param="seed")
    top_logprobs = body.get("top_logprobs") or 0
    if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int):
        raise InvalidRequest("top_logprobs must be an integer", param="top_logprobs")
    fmt = body.get("response_format") or {}
    return SamplingParams(
        max_tokens=_max_tokens(body, max_new_tokens),
        temperature=1.0 if temperature is None else _number(temperature, "temperature"),
        top_p=1.0 if top_p is None else _number(top_p, "top_p"),
        stop=_stop(body),
        seed=seed,
        json=fmt.get("type") in ("json_object", "json_schema"),
        json_required=_required_keys(fmt),
        logprobs=bool(body.get("logprobs")),
        top_logprobs=top_logprobs,
    )


def _required_keys(fmt: dict[str, Any]) -> tuple[str, ...]:
    if fmt.get("type") != "json_schema":
        return ()
    schema = (fmt.get("json_schema") or {}).get("schema") or {}
    required = schema.get("required") if isinstance(schema, dict) else None
    if not isinstance(required, list) or not all(isinstance(k, str) for k in required):
        return ()
    return tuple(required)


def json_schema_hint(body: dict[str, Any]) -> str | None:
    """A system instruction describing a json_schema response format: a small model cannot follow a schema it
    never sees (the constrained decoder guarantees JSON syntax and the required keys, not the rest). A key list
    works better than the raw schema, which small models tend to copy out instead of following."""
    fmt = body.get("response_format") or {}
    if fmt.get("type") != "json_schema":
        return None
    schema = (fmt.get("json_schema") or {}).get("schema")
    props = schema.get("properties") if isinstance(schema, dict) else None
    if isinstance(props, dict) and props:
        required = set(_required_keys(fmt))
        keys = []
        for name, spec in props.items():
            kind = spec.get("type", "any") if isinstance(spec, dict) else "any"
            if isinstance(spec, dict) and spec.get("enum"):
                kind = "one of " + ", ".join(json.dumps(v) for v in spec["enum"])
            keys.append(f"{json.dumps(name)} ({kind}{', required' if name in required else ''})")
        return "Respond only with a JSON object with these keys: " + "; ".join(keys) + "."
    if schema:
        return "Respond only with a JSON object that follows this JSON schema:\n" + json.dumps(schema)
    return "Respond only with a JSON object."
