"""Rules: route by what a request plainly is (its model name, words, size, requested JSON schema, tools).

    policy:
      - kind: rules
        rules:
          - name: long-context          # route reason "rules:long-context"
            tier: frontier
            min_tokens: 2000
          - name: contracts
            tier: frontier
            keywords_any: [contract, indemnity, "governing law"]
          - name: structured
            tier: local
            json_schema: true
            max_messages: 2

The first rule whose conditions all hold decides; a rule with no condition always matches (a catch-all).
Text conditions read all message text (`field: all`), the last user message (`last_user`) or the system
prompt (`system`). Tokens are estimated as characters / 4, as the gateway estimates them.
Regexes and keyword lists are compiled once, when the policy is built.
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tiergate.errors import ConfigError
from tiergate.routing.base import (
    RouteDecision,
    Router,
    RouteRequest,
    RouterOptions,
    RoutingContext,
    message_text,
)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="shown in the route reason as rules:<name>")
    tier: str = Field(description="the tier a matching request goes to")
    field: Literal["all", "last_user", "system"] = Field("all", description="which text the text conditions read")
    regex: str | list[str] | None = Field(None, description="matches when any pattern is found (Python re.search)")
    ignore_case: bool = Field(True, description="regex and keywords ignore case")
    keywords_any: list[str] = Field(default_factory=list, description="matches when any word or phrase occurs")
    keywords_all: list[str] = Field(default_factory=list, description="matches when every word or phrase occurs")
    keywords_none: list[str] = Field(default_factory=list, description="fails when any word or phrase occurs")
    min_messages: int | None = Field(None, ge=0, description="at least this many messages")
    max_messages: int | None = Field(None, ge=0, description="at most this many messages")
    min_tokens: int | None = Field(None, ge=0, description="at least this many estimated prompt tokens")
    max_tokens: int | None = Field(None, ge=0, description="at most this many estimated prompt tokens")
    models: list[str] = Field(default_factory=list, description="the request's `model` is one of these")
    workloads: list[str] = Field(default_factory=list, description="the request's workload is one of these")
    json_schema: bool | None = Field(None, description="true: response_format asks for a json_schema; false: it "
                                                       "does not")
    json_mode: bool | None = Field(None, description="true: response_format asks for JSON (json_object or "
                                                     "json_schema); false: it does not")
    tools: bool | None = Field(None, description="true: the request offers tools; false: it offers none")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", v):
            raise ValueError("rule names are 1-64 letters, digits, '_', '.', ':' or '-'")
        return v


def _keyword_pattern(words: list[str], ignore_case: bool) -> re.Pattern[str]:
    parts = []
    for w in words:
        esc = re.escape(w.strip())
        # word boundaries where the phrase starts or ends with a word character
        left = r"\b" if re.match(r"\w", w.strip()) else ""
        right = r"\b" if re.search(r"\w$", w.strip()) else ""
        parts.append(left + esc + right)
    return re.compile("|".join(parts), re.IGNORECASE if ignore_case else 0)


class _Compiled:
    """One rule with its patterns compiled and its checks listed, cheapest first."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.reason = f"rules:{rule.name}"
        flags = re.IGNORECASE if rule.ignore_case else 0
        patterns = [rule.regex] if isinstance(rule.regex, str) else list(rule.regex or [])
        try:
            self.regexes = [re.compile(p, flags) for p in patterns]
        except re.error as exc:
            raise ConfigError(f"rule {rule.name!r}: bad regex ({exc})") from exc
        self.any = _keyword_pattern(rule.keywords_any, rule.ignore_case) if rule.keywords_any else None
        self.all = [_keyword_pattern([w], rule.ignore_case) for w in rule.keywords_all]
        self.none = _keyword_pattern(rule.keywords_none, rule.ignore_case) if rule.keywords_none else None
        self.models = frozenset(rule.models)
        self.workloads = frozenset(rule.workloads)
        self.needs_text = bool(self.regexes or self.any or self.all or self.none)

    def _text(self, req: RouteRequest) -> str:
        if self.rule.field == "last_user":
            return req.last_user_text
        if self.rule.field == "system":
            return "\n".join(message_text(m) for m in req.messages
                             if isinstance(m, dict) and m.get("role") in ("system", "developer"))
        return req.text

    def matches(self, req: RouteRequest) -> bool:
        r = self.rule
        if self.models and req.model not in self.models:
            return False
        if self.workloads and req.workload not in self.workloads:
            return False
        n = len(req.messages)
        if (r.min_messages is not None and n < r.min_messages) or (r.max_messages is not None and n > r.max_messages):
            return False
        if r.tools is not None and bool(req.body.get("tools")) != r.tools:
            return False
        if r.json_schema is not None or r.json_mode is not None:
            fmt = req.body.get("response_format")
            kind = fmt.get("type") if isinstance(fmt, dict) else None
            if r.json_schema is not None and (kind == "json_schema") != r.json_schema:
                return False
            if r.json_mode is not None and (kind in ("json_schema", "json_object")) != r.json_mode:
                return False
        if r.min_tokens is not None or r.max_tokens is not None:
            tokens = estimate_tokens(req.text)
            if (r.min_tokens is not None and tokens < r.min_tokens) or (r.max_tokens is not None and tokens > r.max_tokens):
                return False
        if self.needs_text:
            text = self._text(req)
            if self.none is not None and self.none.search(text):
                return False
            if self.any is not None and not self.any.search(text):
                return False
            if any(p.search(text) is None for p in self.all):
                return False
            if self.regexes and not any(p.search(text) for p in self.regexes):
                return False
        return True


def estimate_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) if text else 0


class RulesRouter(Router):
    """The first matching rule decides; no match lets the next router decide."""

    kind = "rules"

    class Options(RouterOptions):
        rules: list[Rule] = Field(description="rules in order; the first that matches decides")

        @field_validator("rules")
        @classmethod
        def _unique(cls, v: list[Rule]) -> list[Rule]:
            names = [r.name for r in v]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"duplicate rule name(s): {', '.join(dup)}")
            return v

    def __init__(self, options: RouterOptions, ctx: RoutingContext) -> None:
        super().__init__(options, ctx)
        rules: list[Rule] = self.options.rules  # type: ignore[attr-defined]
        for r in rules:
            if ctx.tiers and r.tier not in ctx.tiers:
                raise ConfigError(f"workloads.{ctx.workload}: rule {r.name!r}: unknown tier {r.tier!r}")
        self.compiled = [_Compiled(r) for r in rules]

    def decide(self, req: RouteRequest) -> RouteDecision | None:
        for c in self.compiled:
            if c.matches(req):
                return RouteDecision(c.rule.tier, c.reason)
        return None

    def explain(self, req: RouteRequest) -> list[dict[str, Any]]:
        """Which rules match (all of them, not only the first): for `tiergate router explain` and tests."""
        return [{"rule": c.rule.name, "tier": c.rule.tier, "matches": c.matches(req)} for c in self.compiled]
