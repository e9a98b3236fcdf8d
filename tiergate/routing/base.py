"""The router interface and the values it trades in.

    class MyRouter(Router):
        kind = "mine"
        class Options(RouterOptions):
            tier: str
        def decide(self, req: RouteRequest) -> RouteDecision | None:
            return RouteDecision(self.options.tier, "mine") if "refund" in req.text else None

Route reasons are stable strings (shown in X-Tiergate-Route-Reason, captured records and metrics).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


@dataclass(frozen=True, slots=True)
class RouteDecision:
    tier: str
    reason: str
    score: float | None = None
    on_prem_only: bool = False
    """Set by the privacy guard: no external tier may see this request, not even on fallback."""
    detail: dict[str, Any] | None = field(default=None, compare=False)
    shadow: str | None = None
    """Also send the request to this tier after the caller has its answer (shadow testing); stored, not returned."""
    reviewer: Router | None = field(default=None, compare=False, repr=False)
    """A cascade: after `tier` answers, the gateway calls `reviewer.review(request, result)`; a decision it
    returns sends the request on to that tier (both answers are kept in the record)."""


@dataclass
class RouteRequest:
    """What routers see of one request."""

    body: dict[str, Any]
    workload: str
    sticky_key: str | None = None

    @property
    def model(self) -> str | None:
        m = self.body.get("model")
        return m if isinstance(m, str) else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        msgs = self.body.get("messages")
        return msgs if isinstance(msgs, list) else []

    @cached_property
    def text(self) -> str:
        """All message text, joined: what content routers read."""
        return "\n".join(message_text(m) for m in self.messages)

    @cached_property
    def last_user_text(self) -> str:
        for m in reversed(self.messages):
            if isinstance(m, dict) and m.get("role") == "user":
                return message_text(m)
        return ""


_DATA_URL = re.compile(r"data:[\w.+-]+/[\w.+-]+(?:;[\w.+-]+=[\w.+-]+)*;base64,")


def string_leaves(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (dict keys and values, list items, recursively), base64 data: URLs
    (inline images and audio) left out: all the text of a request that a tier would receive."""
    if isinstance(value, str):
        if not _DATA_URL.match(value):
            yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from string_leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from string_leaves(v)


def message_text(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


class RouterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class RoutingContext:
    """What a router may know of the deployment when it is built."""

    tiers: dict[str, Any]
    """tier name -> tier config"""
    workload: str
    base_dir: str = "."


class Router(ABC):
    kind: ClassVar[str]
    Options: ClassVar[type[RouterOptions]] = RouterOptions

    def __init__(self, options: RouterOptions, ctx: RoutingContext) -> None:
        self.options = options
        self.ctx = ctx

    async def start(self) -> None:
        """Load models the router needs (called once by the gateway)."""

    @abstractmethod
    def decide(self, req: RouteRequest) -> RouteDecision | None:
        """A decision, or None to let the next router decide."""

    async def adecide(self, req: RouteRequest) -> RouteDecision | None:
        """Async form; routers that run models override this to keep the event loop free."""
        return self.decide(req)

    async def review(self, req: RouteRequest, result: Any) -> RouteDecision | None:
        """For cascades: judge a tier's answer (a `TierResult`); a decision escalates, None keeps the answer."""
        return None
