"""Requests that end badly still end in OpenAI's shape and in a full record: a bug answers 500, a caller that leaves
is recorded as 499 with its work cancelled (and what a broken-off stream used, priced), bad admin input is refused
with 400, and every error response is counted in the metrics. The upstream is the stub process on loopback."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

# ruff: noqa: F811  (the stub fixture imported here is a test parameter below)
from tests.gateway_support import ADMIN, keyed_gateway, stub  # noqa: F401  (stub: a fixture)
from tiergate.store.records import query_records
from tiergate.testing.gateway import RunningGateway
from tiergate.testing.stub_process import StubProcess

MSG = {"model": "up", "messages": [{"role": "user", "content": "one two three"}]}


@pytest.fixture
def gw(tmp_path, stub: StubProcess):
    with keyed_gateway(tmp_path, stub, max_body_bytes=4096, read_s=20) as running:
        yield running


def _post(gw: RunningGateway, body: Any, *, key: str | None = None, **kw: Any) -> httpx.Response:
    return httpx.post(gw.base_url + "/chat/completions", json=body, timeout=kw.pop("timeout", 10),
                      headers={"Authorization": f"Bearer {key or gw.key}", **kw.pop("headers", {})}, **kw)


def _records(gw: RunningGateway) -> list[dict[str, Any]]:
    loop = gw.gateway.writer._task.get_loop()
    asyncio.run_coroutine_threadsafe(gw.gateway.writer.flush(), loop).result(10)
    return query_records(gw.gateway.engine, limit=None, newest_first=False)


def _wait_for_record(gw: RunningGateway, within_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + within_s
    while True:
        rows = _records(gw)
        if rows:
            return rows[-1]
        assert time.monotonic() < deadline, f"no record within {within_s}s"
        time.sleep(0.05)


def _error_count(gw: RunningGateway, status: int) -> float:
    m = re.search(rf'^tiergate_errors_total{{status="{status}"}} (\S+)$', httpx.get(gw.url + "/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_bug_answers_500_in_openai_shape_and_is_recorded(gw: RunningGateway) -> None:
    async def broken(body: dict[str, Any]) -> Any:
        raise KeyError("a bug")

    gw.gateway.tiers["up"].complete = broken  # type: ignore[method-assign]
    r = _post(gw, MSG)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("server_error", "internal_error") and "KeyError" in err["message"]
    assert r.headers["x-tiergate-request-id"]
    rec = _records(gw)[-1]
    assert (rec["status"], rec["http_status"]) == ("error", 500)
    assert "KeyError" in rec["error"] and rec["latency_ms"] > 0 and rec["tier"] == "up"
    assert _error_count(gw, 500) == 1


def test_a_caller_that_leaves_is_recorded_as_499_and_its_work_cancelled(gw: RunningGateway, stub: StubProcess) -> None:
    stub.control(stall={"count": 1, "seconds": 6})
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        _post(gw, MSG, timeout=0.5)
    rec = _wait_for_record(gw, within_s=4)  # long before the upstream would have answered
    assert time.monotonic() - t0 < 5
    assert (rec["status"], rec["http_status"]) == ("error", 499)
    assert "closed the connection" in rec["error"] and 400 < rec["latency_ms"] < 4000
    assert rec["cost_usd"] is None  # the answer never came: what the upstream used is unknown
    assert _error_count(gw, 499) == 1
    assert gw.gateway.inflight == 0


def test_a_stream_the_caller_drops_keeps_its_partial_answer_and_cost(gw: RunningGateway, stub: StubProcess) -> None:
    stub.control(stall={"count": 1, "seconds": 6, "after_chunks": 2})
    body = {**MSG, "stream": True}
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", gw.base_url + "/chat/completions", json=body,
            headers={"Authorization": f"Bearer {gw.key}"}) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = [next(lines) for _ in range(3)]  # role chunk, blank line, first content chunk
        assert any("stub" in line for line in got)
    rec = _wait_for_record(gw, within_s=4)
    assert (rec["status"], rec["http_status"], rec["stream"]) == ("error", 499, True)
    assert rec["answer"].startswith("stub")
    assert rec["response"] == {"usage_estimated": True}
    assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] > 0
    assert rec["cost_usd"] == pytest.approx((rec["prompt_tokens"] * 2.0 + rec["completion_tokens"] * 8.0) / 1e6)
    assert _error_count(gw, 499) == 1 and gw.gateway.inflight == 0
    from tiergate.costs.report import spend_report  # what the upstream billed is spend

    assert spend_report(gw.gateway.engine, gw.gateway.config)["spend"]["cost_usd"] == pytest.approx(rec["cost_usd"])


def test_refusals_before_a_record_are_counted(gw: RunningGateway) -> None:
    assert _post(gw, MSG, key="tg-wrong").status_code == 401
    big = {**MSG, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert _post(gw, big).status_code == 413
    assert _error_count(gw, 401) == 1 and _error_count(gw, 413) == 1
    assert _records(gw) == []  # refused before a record exists, as before


def test_shape_errors_name_the_field(gw: RunningGateway) -> None:
    for modalities in (5, "text", [1]):
        r = _post(gw, {**MSG, "modalities": modalities})
        assert r.status_code == 400 and r.json()["error"]["param"] == "modalities"
    r = _post(gw, {**MSG, "temperature": "hot"}, headers={"X-Tiergate-Workload": "chat"})
    assert r.status_code == 400 and _records(gw)[-1]["workload"] == "chat"  # counted on its workload


def test_admin_refuses_bad_keys_and_limits(gw: RunningGateway) -> None:
    url = gw.url + "/admin/keys"
    for raw in (b"[1]", b'"x"', b"{bad"):
        r = httpx.post(url, content=raw, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["message"]
    for body, param in (({"name": ""}, "name"), ({"name": 5}, "name"), ({"name": "a", "workloads": "billing"},
                        "workloads"), ({"name": "a", "workloads": [1]}, "workloads"),
                        ({"name": "a", "workloads": []}, "workloads")):
        r = httpx.post(url, json=body, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, body
    assert httpx.post(url, json={"name": "ops", "workloads": ["billing"]}, headers=ADMIN).status_code == 201
    r = httpx.post(url, json={"name": "ops"}, headers=ADMIN)  # keys are revoked by name: names are unique
    assert r.status_code == 400 and "already named" in r.json()["error"]["message"]
    r = httpx.post(url, json={"name": "x" * 129}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "name"
    r = httpx.get(gw.url + "/admin/records", params={"status": "bogus"}, headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["param"] == "status"
    for limit in ("-1", "0", "1001", "many"):
        r = httpx.get(gw.url + "/admin/records", params={"limit": limit}, headers=ADMIN)
        assert r.status_code == 400 and r.json()["error"]["param"] == "limit"


def test_a_key_scoped_by_a_string_matches_whole_workload_names(gw: RunningGateway) -> None:
    """A row written before workloads were validated ("billing", not ["billing"]) must not match substrings."""
    from tiergate.store.keys import hash_key
    from tiergate.store.schema import api_keys

    secret = "tg-legacy-scope-0123456789"
    with gw.gateway.engine.begin() as conn:
        conn.execute(insert(api_keys).values(id="key_legacy", name="legacy", key_hash=hash_key(secret),
                                             prefix=secret[:8], created_at=time.time(), workloads="billing"))
    assert _post(gw, MSG, key=secret, headers={"X-Tiergate-Workload": "billing"}).status_code == 200
    for other in ("bill", "ill", "g"):
        r = _post(gw, MSG, key=secret, headers={"X-Tiergate-Workload": other})
        assert r.status_code == 403, other


def test_local_tiers_refuse_other_modalities() -> None:
    from tiergate.errors import InvalidRequest
    from tiergate.tiers.chat_request import reject_unsupported

    reject_unsupported({"modalities": ["text"]})
    with pytest.raises(InvalidRequest) as exc:
        reject_unsupported({"modalities": ["text", "audio"]})
    assert exc.value.param == "modalities"
