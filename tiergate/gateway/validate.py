"""Shape checks for an OpenAI chat-completions request, with errors that name the bad field.

Only what the gateway itself relies on is checked; every other field passes through to upstream tiers as sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from tiergate.errors import InvalidRequest

_ROLES = {"system", "developer", "user", "assistant", "tool", "function"}

MAX_DEPTH = 128
"""Arrays and objects nested deeper than this are refused. The JSON parser accepts 1024 levels, but what it accepts
must also be sent upstream (orjson writes at most 254) and captured (the store's JSON encoder recurses in Python and
fails near 1000, losing the record); real requests, JSON schemas of tools and response formats included, nest far
less."""


def _check_depth(body: Any) -> None:
    """InvalidRequest when `body` nests arrays and objects more than MAX_DEPTH deep. Level by level, not recursively
    (Python's own recursion limit is about as deep as the parser goes), in time under the parse's own."""
    level, depth = [body], 1
    while level:
        if depth > MAX_DEPTH:
            raise InvalidRequest(f"The request body nests arrays and objects more than {MAX_DEPTH} levels deep.")
        below: list[Any] = []
        for node in level:
            below.extend([c for c in (node.values() if type(node) is dict else node)
                          if type(c) is dict or type(c) is list])
        level, depth = below, depth + 1


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:  # else it cannot nest that deep: no walk
        _check_depth(body)
    return body


def _number(body: dict[str, Any], name: str, lo: float, hi: float) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
        raise InvalidRequest(f"'{name}' must be a number between {lo:g} and {hi:g}, got {v!r}.", param=name)


def _positive_int(body: dict[str, Any], name: str) -> None:
    v = body.get(name)
    if v is None:
        return
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer, got {v!r}.", param=name)


def validate_chat_request(body: dict[str, Any]) -> None:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array of message objects.", param="messages")
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        role = m.get("role")
        if role not in _ROLES:
            raise InvalidRequest(f"'{where}.role' must be one of {sorted(_ROLES)}, got {role!r}.",
                                 param=f"{where}.role")
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(f"'{where}.content' must be a string or an array of content parts.",
                                 param=f"{where}.content")
        if content is None and role in {"system", "developer", "user"}:
            raise InvalidRequest(f"'{where}.content' is required for role {role!r}.", param=f"{where}.content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise InvalidRequest(f"'{where}.content[{j}]' must be an object with a 'type'.",
                                         param=f"{where}.content[{j}]")
                if part["type"] == "text" and not isinstance(part.get("text"), str):
                    # routers, the monitor and token estimates read these as text
                    raise InvalidRequest(f"'{where}.content[{j}].text' must be a string.",
                                         param=f"{where}.content[{j}].text")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    _positive_int(body, "n")
    stop = body.get("stop")
    if stop is not None and not (isinstance(stop, str) or (
            isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) for s in stop))):
        raise InvalidRequest("'stop' must be a string or an array of up to 4 strings.", param="stop")
    modalities = body.get("modalities")
    if modalities is not None and not (isinstance(modalities, list) and all(isinstance(m, str) for m in modalities)):
        raise InvalidRequest("'modalities' must be an array of strings.", param="modalities")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object.", param="metadata")
    workload = metadata.get("workload") if metadata else None
    if isinstance(workload, str) and not workload.isprintable():
        # a name for logs, metrics and reports (and echoed, percent-encoded where it must be, in a header)
        raise InvalidRequest("'metadata.workload' must be printable text (no control characters).",
                             param="metadata.workload")
    rf = body.get("response_format")
    if rf is not None and not (isinstance(rf, dict) and isinstance(rf.get("type"), str)):
        raise InvalidRequest("'response_format' must be an object with a 'type'.", param="response_format")
