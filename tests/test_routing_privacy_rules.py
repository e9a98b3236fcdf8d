"""The privacy guard (detectors, on-prem only, never external even when the on-prem tier fails, through the
real gateway and stub upstream processes), the rules router, and the order in which a policy composes routers."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tiergate.config import parse_config
from tiergate.errors import ConfigError
from tiergate.routing.base import RouteRequest
from tiergate.routing.policy import Routing
from tiergate.routing.privacy import detect_sensitive
from tiergate.store.records import query_records
from tiergate.testing.gateway import run_gateway
from tiergate.testing.stub_process import start_stub

DETECTOR_CASES = [
    ("mail me at jo.smith+x@example.co.uk", {"email"}),
    ("card 4111 1111 1111 1111 expires 09/27", {"card"}),
    ("card 4111-1111-1111-1112", set()),                      # fails the Luhn check
    ("IBAN GB82 WEST 1234 5698 7654 32 please", {"iban"}),
    ("IBAN GB82 WEST 1234 5698 7654 33 please", set()),       # fails mod-97
    ("pay DE89370400440532013000 today", {"iban"}),
    ("my ssn is 123-45-6789", {"ssn"}),
    ("ssn: 123456789", {"ssn"}),
    ("ticket 000-12-3456", set()),                            # area 000 is never issued
    ("NI number JG 10 37 50 B", {"nino"}),
    ("call me on +44 20 7946 0958", {"phone"}),
    ("reach me at (415) 555-2671", {"phone"}),
    ("my mobile is 07700 900123", {"phone"}),
    ("account number 12345678, sort code 12-34-56", {"account"}),
    ("date of birth: 12/03/1984", {"dob"}),
    ("my passport number is X1234567", {"passport"}),
    ("my name is Jane Doe", {"name"}),
    ("Dear Mr. Holmes, thanks", {"name"}),
    ("the meeting is on 2024-10-12 at 10:30, room 4, 3 people, budget 1500 eur", set()),
    ("I paid 12.50 for 3 items on 12/05/2023, order #88421", set()),
    ("version 1.2.3 released in 2023", set()),
    ("how do I reset my password?", set()),
    ("my name is not important", set()),
    ("server 192.168.1.20 is down", set()),                   # ip is off by default
]


@pytest.mark.parametrize("text, kinds", DETECTOR_CASES)
def test_detectors(text, kinds):
    assert set(detect_sensitive(text)) == kinds


def test_detector_selection():
    assert detect_sensitive("server 192.168.1.20, mail a@b.io", ["ip"]) == {"ip": 1}
    assert detect_sensitive("mail a@b.io", ["phone"]) == {}


def _config(**workloads):
    return parse_config({
        "tiers": {
            "local": {"kind": "upstream", "base_url": "http://127.0.0.1:9", "zone": "on_prem"},
            "local2": {"kind": "upstream", "base_url": "http://127.0.0.1:9", "zone": "on_prem"},
            "frontier": {"kind": "upstream", "base_url": "http://127.0.0.1:9", "zone": "external"},
        },
        "models": {"auto": "auto"},
        "routing": {"default_tier": "frontier"},
        "workloads": workloads,
    })


def _route(routing, text, workload="w", **body):
    req = RouteRequest({"model": "auto", "messages": [{"role": "user", "content": text}], **body}, workload)
    return asyncio.run(routing.route(req))


def test_privacy_router_decides_on_prem_only():
    routing = Routing.from_config(_config(w={"policy": [{"kind": "privacy", "tier": "local"}]}))
    d = _route(routing, "my card is 4111 1111 1111 1111 and mail jo@x.io")
    assert (d.tier, d.reason, d.on_prem_only) == ("local", "privacy", True)
    assert d.detail == {"found": ["card", "email"], "counts": {"card": 1, "email": 1}}
    assert "4111" not in str(d.detail)  # kinds, never values
    assert _route(routing, "what are your opening hours?").reason == "default"


def test_privacy_scans_everything_a_tier_would_receive():
    """An upstream tier gets the whole body: personal data in tool-call arguments, a message name, the user field
    or metadata leaves as surely as in the text. Inline images (data: URLs) are not scanned."""
    routing = Routing.from_config(_config(w={"policy": [{"kind": "privacy", "tier": "local"}]}))
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "refund", "arguments": '{"email": "a.b@example.org", "card": "4111111111111111"}'}}]}
    msgs = [{"role": "user", "content": "refund my order"}, call,
            {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    for body in ({"messages": msgs}, {"user": "jane.doe@example.com"}, {"metadata": {"customer": "+44 7700 900123"}},
                 {"metadata": {"jane.doe@example.com": "vip"}},
                 {"messages": [{"role": "user", "content": "data: customer SSN 123-45-6789"}]},
                 {"messages": [{"role": "user", "name": "jo@x.io", "content": "hi"}]}):
        req = RouteRequest({"model": "auto", "messages": [{"role": "user", "content": "hi"}], **body}, "w")
        assert asyncio.run(routing.route(req)).reason == "privacy", body
    image = {"role": "user", "content": [{"type": "text", "text": "what is this?"}, {"type": "image_url",
             "image_url": {"url": "data:image/png;base64," + "4111111111111111" * 4}}]}
    assert asyncio.run(routing.route(RouteRequest({"model": "auto", "messages": [image]}, "w"))).reason == "default"
    user_only = Routing.from_config(_config(w={"policy": [{"kind": "privacy", "tier": "local", "scan": "user"}]}))
    assert _route(user_only, "hi", user="jane.doe@example.com").reason == "default"


def test_privacy_router_config_errors():
    with pytest.raises(ConfigError, match="not an on_prem tier"):
        Routing.from_config(_config(w={"policy": [{"kind": "privacy", "tier": "frontier"}]}))
    with pytest.raises(ConfigError, match="detectors"):
        Routing.from_config(_config(w={"policy": [{"kind": "privacy", "tier": "local", "detectors": ["dna"]}]}))
    with pytest.raises(ConfigError, match="unknown tier 'nowhere'"):
        Routing.from_config(_config(w={"policy": [{"kind": "privacy", "tier": "nowhere"}]}))


RULES = [
    {"name": "long", "tier": "frontier", "min_tokens": 50},
    {"name": "legal", "tier": "frontier", "keywords_any": ["contract", "governing law"]},
    {"name": "both", "tier": "local2", "keywords_all": ["refund", "invoice"], "keywords_none": ["urgent"]},
    {"name": "order-id", "tier": "local", "regex": r"\bORD-\d{6}\b", "ignore_case": False},
    {"name": "schema", "tier": "local", "json_schema": True, "max_messages": 1},
    {"name": "tools", "tier": "frontier", "tools": True},
    {"name": "pinned-model", "tier": "local2", "models": ["auto"], "field": "system", "regex": "triage bot"},
]


@pytest.mark.parametrize("text, body, reason", [
    ("x " * 120, {}, "rules:long"),
    ("please review this Contract", {}, "rules:legal"),
    ("the governing law clause", {}, "rules:legal"),
    ("contractual", {}, "default"),                              # whole words only
    ("refund for invoice 12", {}, "rules:both"),
    ("urgent: refund for invoice 12", {}, "default"),
    ("refund please", {}, "default"),
    ("status of ORD-123456?", {}, "rules:order-id"),
    ("status of ord-123456?", {}, "default"),                     # case-sensitive regex
    ("extract fields", {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
     "rules:schema"),
    ("extract fields", {"response_format": {"type": "json_object"}}, "default"),
    ("weather?", {"tools": [{"type": "function", "function": {"name": "w"}}]}, "rules:tools"),
])
def test_rules(text, body, reason):
    routing = Routing.from_config(_config(w={"policy": [{"kind": "rules", "rules": RULES}]}))
    assert _route(routing, text, **body).reason == reason


def test_rules_read_the_chosen_field_and_message_count():
    routing = Routing.from_config(_config(w={"policy": [{"kind": "rules", "rules": RULES}]}))
    body = {"model": "auto", "messages": [{"role": "system", "content": "You are a triage bot"},
                                          {"role": "user", "content": "hi"}]}
    assert asyncio.run(routing.route(RouteRequest(body, "w"))).reason == "rules:pinned-model"
    two = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    d = asyncio.run(routing.route(RouteRequest({"messages": two, "response_format": fmt}, "w")))
    assert d.reason == "default"  # max_messages: 1


def test_rules_config_errors():
    with pytest.raises(ConfigError, match="unknown tier 'nope'"):
        Routing.from_config(_config(w={"policy": [{"kind": "rules", "rules": [{"name": "a", "tier": "nope"}]}]}))
    with pytest.raises(ConfigError, match="bad regex"):
        Routing.from_config(_config(w={"policy": [{"kind": "rules", "rules": [{"name": "a", "tier": "local",
                                                                                "regex": "("}]}]}))
    with pytest.raises(ConfigError, match="duplicate rule name"):
        Routing.from_config(_config(w={"policy": [{"kind": "rules", "rules": [{"name": "a", "tier": "local"},
                                                                               {"name": "a", "tier": "local"}]}]}))
    with pytest.raises(ConfigError, match="unknown key"):
        Routing.from_config(_config(w={"policy": [{"kind": "rules", "rules": [{"name": "a", "tier": "local",
                                                                                "keyword": "x"}]}]}))


def test_composition_order_first_decisive_wins():
    policy = [
        {"kind": "privacy", "tier": "local"},
        {"kind": "rules", "rules": [{"name": "legal", "tier": "frontier", "keywords_any": ["contract"]},
                                    {"name": "catch-all", "tier": "local2"}]},
        {"kind": "static", "tier": "frontier"},  # never reached: the catch-all rule always decides
    ]
    routing = Routing.from_config(_config(w={"policy": policy}))
    assert _route(routing, "contract for jo@x.io").reason == "privacy"        # privacy first, although 'contract'
    assert _route(routing, "review this contract").reason == "rules:legal"
    assert _route(routing, "hello").reason == "rules:catch-all"
    flipped = Routing.from_config(_config(w={"policy": [policy[1], policy[0]]}))
    assert _route(flipped, "review this contract").reason == "rules:legal"    # the order is the policy's ...
    assert _route(flipped, "contract for jo@x.io").reason == "privacy"        # ... but a guard always runs first


# -- the never-external promise, through the real gateway ---------------------------------------------------------
@pytest.fixture(scope="module")
def stubs():
    with start_stub(model="onprem-model") as onprem, start_stub(model="external-model") as external:
        yield onprem, external


def _gateway_config(tmp_path, onprem, external):
    fast = {"max_attempts": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.05}
    return {
        "auth": {"require_key": False},
        "store": {"url": f"sqlite:///{tmp_path / 'gw.db'}", "flush_interval_ms": 1},
        "tiers": {
            "onprem": {"kind": "upstream", "base_url": onprem.base_url, "zone": "on_prem", "fallback": "external",
                       "timeout": {"connect": 1, "read": 2}, "retry": fast,
                       "breaker": {"failure_threshold": 100, "reset_after_s": 60}},
            "external": {"kind": "upstream", "base_url": external.base_url, "zone": "external",
                         "timeout": {"connect": 1, "read": 2}, "retry": fast},
        },
        "models": {"auto": "auto"},
        "routing": {"default_tier": "onprem"},
        "workloads": {"default": {"policy": [{"kind": "privacy", "tier": "onprem"}]}},
    }


def _post(gw, text, model="auto"):
    return httpx.post(gw.base_url + "/chat/completions", timeout=20,
                      json={"model": model, "messages": [{"role": "user", "content": text}]})


def test_privacy_never_external_even_when_on_prem_fails(tmp_path, stubs):
    onprem, external = stubs
    onprem.reset()
    external.reset()
    with run_gateway(_gateway_config(tmp_path, onprem, external)) as gw:
        ok = _post(gw, "my card 4111 1111 1111 1111 was charged twice")
        assert ok.status_code == 200 and ok.headers["x-tiergate-tier"] == "onprem"
        assert ok.headers["x-tiergate-route-reason"] == "privacy"
        # the on-prem tier fails: a request without private data falls back outside ...
        onprem.control(fail={"count": 1, "status": 503})
        plain = _post(gw, "what are your opening hours?")
        assert plain.status_code == 200 and plain.headers["x-tiergate-tier"] == "external"
        assert len(external.requests()) == 1
        # ... one with private data does not: it fails rather than leave the premises
        onprem.control(fail={"count": 1, "status": 503})
        refused = _post(gw, "my card 4111 1111 1111 1111 was charged twice, mail jo@x.io")
        assert refused.status_code >= 500
        assert len(external.requests()) == 1
        assert all("4111" not in str(r["body"]) for r in external.requests())
        import asyncio

        loop = gw.gateway.writer._task.get_loop()
        asyncio.run_coroutine_threadsafe(gw.gateway.writer.flush(), loop).result(10)
        first = query_records(gw.gateway.engine, limit=None, newest_first=False)[0]
        assert first["response"]["route"] == {"found": ["card"], "counts": {"card": 1}}  # kinds, never values
        assert "4111" not in str(first["response"])


def test_privacy_with_only_external_tiers_left_is_refused(tmp_path, stubs):
    onprem, external = stubs
    onprem.reset()
    external.reset()
    cfg = _gateway_config(tmp_path, onprem, external)
    cfg["tiers"]["onprem"]["breaker"] = {"failure_threshold": 1, "reset_after_s": 600}
    with run_gateway(cfg) as gw:
        onprem.control(fail={"count": 1, "status": 503})
        assert _post(gw, "call me on +44 20 7946 0958").status_code >= 500  # the breaker opens
        refused = _post(gw, "call me on +44 20 7946 0958")
        assert refused.status_code in (403, 502) and not external.requests()


def test_privacy_beats_an_explicit_model_pin(tmp_path, stubs):
    onprem, external = stubs
    onprem.reset()
    external.reset()
    with run_gateway(_gateway_config(tmp_path, onprem, external)) as gw:
        pinned = _post(gw, "my ssn is 123-45-6789", model="external")
        assert pinned.status_code == 200 and pinned.headers["x-tiergate-tier"] == "onprem"
        assert not external.requests()
