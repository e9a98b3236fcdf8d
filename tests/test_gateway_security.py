"""Hostile input against a real gateway (uvicorn on loopback, the stub upstream as a separate process): whatever
a caller sends, the answer is OpenAI's error shape with a sensible status (never a 500 or a dropped connection),
the request is captured, and nothing a caller chooses grows the gateway's state without bound."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
from typing import Any

import httpx
import pytest

# ruff: noqa: F811  (the stub fixture imported here is a test parameter below)
from tests.gateway_support import ADMIN, keyed_gateway, stub  # noqa: F401  (stub: a fixture)
from tiergate.gateway.errors import header_value
from tiergate.gateway.metrics import OTHER_WORKLOAD, Metrics
from tiergate.gateway.validate import MAX_DEPTH, parse_body
from tiergate.store.records import query_records
from tiergate.testing.gateway import RunningGateway
from tiergate.testing.stub_process import StubProcess

MSG = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def gw(tmp_path, stub: StubProcess):
    with keyed_gateway(tmp_path, stub, max_body_bytes=64 * 1024, read_s=10,
                       workloads={"triage": {"tier": "up"}}) as running:
        yield running


def _post(gw: RunningGateway, content: bytes, headers: dict[str, Any] | None = None) -> httpx.Response:
    return httpx.post(gw.base_url + "/chat/completions", content=content, timeout=20,
                      headers={"Authorization": f"Bearer {gw.key}", "Content-Type": "application/json",
                               **(headers or {})})


def _records(gw: RunningGateway) -> list[dict[str, Any]]:
    loop = gw.gateway.writer._task.get_loop()
    asyncio.run_coroutine_threadsafe(gw.gateway.writer.flush(), loop).result(10)
    return query_records(gw.gateway.engine, limit=None, newest_first=False)


def _openai_error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert "Traceback" not in resp.text and "/tiergate/" not in resp.text
    return err


def test_deep_nesting_is_refused_with_400_and_the_refusal_captured(gw: RunningGateway) -> None:
    """orjson parses 1024 levels; the store's JSON encoder gave up near 1000, so such a request's record was lost
    (SQLite logged 'maximum recursion depth exceeded' and dropped it)."""
    for depth in (1000, MAX_DEPTH + 1):
        body = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * depth \
            + b"]" * depth + b"}"
        assert "levels deep" in _openai_error(_post(gw, body), 400)["message"]
    _openai_error(_post(gw, b"[" * 30_000 + b"]" * 30_000), 400)  # past the parser's own limit: a 400 too
    ok = b'{"model": "auto", "messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * (MAX_DEPTH - 3) \
        + b"]" * (MAX_DEPTH - 3) + b"}"
    assert _post(gw, ok).status_code == 200
    assert [r["http_status"] for r in _records(gw)] == [400, 400, 400, 200]


def test_depth_check_counts_objects_and_arrays() -> None:
    def nest(n: int) -> bytes:
        return b'{"a":' * (n - 1) + b"[]" + b"}" * (n - 1)

    assert parse_body(nest(MAX_DEPTH))
    with pytest.raises(Exception, match="levels deep"):
        parse_body(nest(MAX_DEPTH + 1))


def test_a_text_part_without_string_text_is_400(gw: RunningGateway) -> None:
    """Routers, the monitor and token estimates join text parts as strings: a number there was a TypeError."""
    for text in (b"5", b'{"a": 1}', b"null"):
        body = b'{"model": "auto", "messages": [{"role": "user", "content": [{"type": "text", "text": ' + text \
            + b"}]}]}"
        assert _openai_error(_post(gw, body), 400)["param"] == "messages[0].content[0].text"
    image = b'{"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": ' \
        b'{"url": "data:,"}}]}]}'
    assert _post(gw, image).status_code == 200


@pytest.mark.parametrize("workload", ["w\r\nX-Evil: 1", "w\x00", "w\x7f"])
def test_a_workload_name_with_control_characters_is_a_400(gw: RunningGateway, workload: str) -> None:
    """metadata.workload comes back in X-Tiergate-Workload: one with a control character was a dropped connection
    (uvicorn refused the header) after the upstream answered."""
    body = httpx.Request("POST", "http://x", json={**MSG, "metadata": {"workload": workload}}).content
    err = _openai_error(_post(gw, body), 400)
    assert err["param"] == "metadata.workload"
    resp = _post(gw, body)
    assert "x-evil" not in resp.headers
    assert resp.headers["x-tiergate-workload"] == header_value(workload)
    assert _records(gw)[-1]["http_status"] == 400


def test_latin1_workload_names_still_work(gw: RunningGateway) -> None:
    body = httpx.Request("POST", "http://x", json={**MSG, "metadata": {"workload": "caf\u00e9 ops/1"}}).content
    resp = _post(gw, body)
    assert resp.status_code == 200
    assert resp.headers["x-tiergate-workload"].encode("latin-1") == "caf\u00e9 ops/1".encode("latin-1")


def test_names_beyond_latin1_are_kept_and_echoed_percent_encoded(gw: RunningGateway) -> None:
    """A name beyond Latin-1 in metadata was a 500 (UnicodeEncodeError on the echo header); one sent as UTF-8 in
    the X-Tiergate-Workload header was stored as Latin-1 mojibake ("æ\x97¥æ\x9c¬")."""
    name = "\u65e5\u672c"
    body = httpx.Request("POST", "http://x", json={**MSG, "metadata": {"workload": name}}).content
    resp = _post(gw, body)
    assert resp.status_code == 200 and resp.headers["x-tiergate-workload"] == header_value(name) == "%E6%97%A5%E6%9C%AC"
    assert _records(gw)[-1]["workload"] == name
    resp = _post(gw, httpx.Request("POST", "http://x", json=MSG).content,
                 {"X-Tiergate-Workload": name.encode("utf-8")})
    assert resp.status_code == 200 and _records(gw)[-1]["workload"] == name


def test_header_value_escapes_only_what_cannot_be_sent() -> None:
    assert header_value("triage") == "triage"
    assert header_value("caf\u00e9 x/y:z") == "caf\u00e9 x/y:z"
    assert header_value("a\r\nb") == "a%0D%0Ab"
    assert header_value("\u65e5%") == "%E6%97%A5%25"


def test_basic_auth_that_is_not_ascii_is_401_not_500(gw: RunningGateway) -> None:
    for value in (b"Basic \xe9\xe9", b"Basic !!!", b"Basic " + base64.b64encode(b"\xff\xfe:x")):
        resp = httpx.get(gw.url + "/dashboard", headers=[(b"Authorization", value)])
        assert resp.status_code == 401, resp.text
    good = b"Basic " + base64.b64encode(b"me:admin-secret")
    assert httpx.get(gw.url + "/dashboard", headers=[(b"Authorization", good)]).status_code == 200


def test_oversized_headers_are_431(gw: RunningGateway) -> None:
    """httptools sets no header limit: a 1 MB X-Tiergate-Caller was answered and stored, past max_body_bytes."""
    body = httpx.Request("POST", "http://x", json=MSG).content
    err = _openai_error(_post(gw, body, {"X-Tiergate-Caller": "c" * 1_000_000}), 431)
    assert err["code"] == "request_headers_too_large"
    _openai_error(httpx.get(gw.base_url + "/models", headers={"Authorization": "Bearer " + "k" * 100_000}), 431)
    assert _post(gw, body, {"X-Tiergate-Caller": "c" * 2000}).status_code == 200
    assert [len(r["caller"] or "") for r in _records(gw)] == [256]  # cut to fit its column (store.writer)


def test_unconfigured_workload_names_do_not_grow_the_metrics(gw: RunningGateway) -> None:
    """Any key holder picks workload names: each one used to become series on ~10 metrics (46 lines with the
    latency histograms), so /metrics and Prometheus grew without bound."""
    gw.gateway.metrics.max_other_workloads = 3
    for i in range(10):
        body = httpx.Request("POST", "http://x", json={**MSG, "metadata": {"workload": f"made-up-{i}"}}).content
        assert _post(gw, body).status_code == 200
    refused = httpx.Request("POST", "http://x", json={**MSG, "temperature": 9,
                                                      "metadata": {"workload": "made-up-refused"}}).content
    assert _post(gw, refused).status_code == 400
    assert _post(gw, httpx.Request("POST", "http://x", json=MSG).content,
                 {"X-Tiergate-Workload": "triage"}).status_code == 200
    text = httpx.get(gw.url + "/metrics").text
    names = set(re.findall(r'workload="([^"]*)"', text))
    assert names == {"made-up-0", "made-up-1", "made-up-2", OTHER_WORKLOAD, "triage"}
    assert re.search(rf'^tiergate_requests_total{{status="ok",tier="up",workload="{OTHER_WORKLOAD}"}} 7\.0$',
                     text, re.M)
    # the records keep every name
    assert {f"made-up-{i}" for i in range(10)} | {"made-up-refused"} <= {r["workload"] for r in _records(gw)}


def test_metrics_label_configured_workloads_first() -> None:
    m = Metrics(["a"], max_other_workloads=1)
    assert [m.workload_label(w) for w in ("x", "y", "a", "x", "z")] == ["x", OTHER_WORKLOAD, "a", "x", OTHER_WORKLOAD]
    m.requests.labels(workload="y", tier="t", status="ok").inc()
    assert b'workload="_other"' in m.render()


def _raw(gw: RunningGateway, head: bytes, body: bytes = b"", timeout: float = 10) -> bytes:
    host, port = gw.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(head + body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def test_body_limits_hold_for_chunked_and_lying_lengths(gw: RunningGateway) -> None:
    auth = f"Authorization: Bearer {gw.key}\r\n".encode()
    # no Content-Length: the chunks are counted as they come (the last is never sent: the answer comes first)
    chunked = b"%x\r\n%s\r\n" % (8192, b"x" * 8192) * 9
    out = _raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth
               + b"Transfer-Encoding: chunked\r\n\r\n", chunked)
    assert out.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in out
    out = _raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth
               + b"Content-Length: 10000000\r\n\r\n", b"{}")
    assert out.startswith(b"HTTP/1.1 413") and b'"request_too_large"' in out
    out = _raw(gw, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth
               + b"Content-Length: 12\r\n\r\n", b'{"model": "auto"} trailing')
    assert out.startswith(b"HTTP/1.1 400") and b"not valid JSON" in out


def test_odd_json_is_a_400(gw: RunningGateway) -> None:
    for body in (b'{"model": "auto", "temperature": NaN, "messages": []}',
                 b'{"model": "auto", "temperature": 1e999, "messages": [{"role": "user", "content": "x"}]}',
                 b'{"model": "auto", "max_tokens": 1e30, "messages": [{"role": "user", "content": "x"}]}',
                 b'{"model": "auto", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
                 b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800"}]}'):
        _openai_error(_post(gw, body), 400)


def test_a_store_outage_during_the_key_check_is_503_not_a_bug(gw: RunningGateway, tmp_path) -> None:
    """The key lookup's OperationalError was an unhandled 500 with a traceback logged for every request."""
    from sqlalchemy import create_engine

    gw.gateway.keys.engine = create_engine(f"sqlite:///{tmp_path / 'no-such-dir' / 'gone.db'}")
    body = httpx.Request("POST", "http://x", json=MSG).content
    assert _openai_error(_post(gw, body), 503)["code"] == "store_unavailable"
    resp = httpx.get(gw.base_url + "/models", headers={"Authorization": f"Bearer {gw.key}"})
    assert _openai_error(resp, 503)["code"] == "store_unavailable"
    # /healthz said "ok" meanwhile: a load balancer kept sending traffic every request of which failed
    assert httpx.get(gw.url + "/healthz").json()["store"]["ok"] is True  # (its check is the gateway's engine)
    gw.gateway.engine = gw.gateway.keys.engine
    gw.gateway.store_health = None  # no cached check
    health = httpx.get(gw.url + "/healthz")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert health.json()["store"] == {"ok": False, "error": "OperationalError"}


def test_an_unhandled_error_says_internal_error(gw: RunningGateway) -> None:
    async def broken(headers: Any) -> None:
        raise KeyError("a bug")

    gw.gateway.keys.check = broken  # type: ignore[method-assign]
    err = _openai_error(httpx.get(gw.base_url + "/models"), 500)
    assert (err["type"], err["code"]) == ("server_error", "internal_error")
