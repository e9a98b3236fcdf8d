"""The privacy guard: requests carrying personal or regulated data stay on-prem.

    policy:
      - kind: privacy
        tier: local                 # an on_prem tier; the request goes there with on_prem_only set
        detectors: [email, phone, card, iban, ssn, nino, account, dob, name]

A decision from this router carries `on_prem_only=True`: the gateway drops every external tier from the
fallback chain and refuses with 403 PrivacyViolation when no on-prem tier is left, so such a request is never
sent outside, not even when the on-prem tier fails. `detail["found"]` names the kinds found, never the values
(decisions end up in logs and records).

The detectors (their patterns and checks) live in `tiergate.data.pii`, shared with `--scrub-pii`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from tiergate.data.pii import DEFAULT_DETECTORS, Detector, detect_sensitive
from tiergate.errors import ConfigError
from tiergate.routing.base import RouteDecision, Router, RouteRequest, RouterOptions, RoutingContext

__all__ = ["DEFAULT_DETECTORS", "Detector", "PrivacyRouter", "detect_sensitive"]


class PrivacyRouter(Router):
    """Sends requests with personal or regulated data to an on-prem tier, marked on-prem only."""

    kind = "privacy"
    guard: ClassVar[bool] = True
    """Runs before an explicit `model` pin: a pin cannot send private data outside."""

    class Options(RouterOptions):
        tier: str = Field(description="the on-prem tier that takes requests with sensitive data")
        detectors: list[Detector] = Field(default_factory=lambda: list(DEFAULT_DETECTORS),
                                          description="kinds of data to look for (see tiergate.data.pii)")
        scan: Literal["all", "user"] = Field(
            "all", description="'all': every text the request carries (every message with its tool calls and names, "
                               "the user field, metadata); 'user': the user messages only")

    def __init__(self, options: RouterOptions, ctx: RoutingContext) -> None:
        super().__init__(options, ctx)
        opts: PrivacyRouter.Options = self.options  # type: ignore[assignment]
        tier = ctx.tiers.get(opts.tier)
        if tier is not None and getattr(tier, "zone", "external") != "on_prem":
            raise ConfigError(f"workloads.{ctx.workload}: privacy router tier {opts.tier!r} is not an on_prem tier")
        self.detectors = list(dict.fromkeys(opts.detectors))

    def _text(self, req: RouteRequest) -> str:
        """What is scanned. With 'all', every string of the body but the model name: an upstream tier receives
        the whole body, so personal data in tool-call arguments, a message `name` or the `user` field would leave
        as surely as in the message text."""
        from tiergate.routing.base import string_leaves

        if self.options.scan == "all":  # type: ignore[attr-defined]
            return "\n".join(string_leaves({k: v for k, v in req.body.items() if k != "model"}))
        return "\n".join(string_leaves([m for m in req.messages if isinstance(m, dict) and m.get("role") == "user"]))

    def decide(self, req: RouteRequest) -> RouteDecision | None:
        found = detect_sensitive(self._text(req), self.detectors)
        if not found:
            return None
        return RouteDecision(self.options.tier, "privacy", on_prem_only=True,  # type: ignore[attr-defined]
                             detail={"found": sorted(found), "counts": found})
