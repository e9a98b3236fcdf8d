"""The privacy guard: requests carrying personal or regulated data stay on-prem.

    policy:
      - kind: privacy
        tier: local                 # an on_prem tier; the request goes there with on_prem_only set
        detectors: [email, phone, card, iban, ssn, nino, account, dob, name]

A decision from this router carries `on_prem_only=True`: the gateway drops every external tier from the
fallback chain and refuses with 403 PrivacyViolation when no on-prem tier is left, so such a request is never
sent outside, not even when the on-prem tier fails. `detail["found"]` names the kinds found, never the values
(decisions end up in logs and records).

Detectors are precise rather than greedy, each a precompiled pattern plus a check where one exists:
- `email`; `card`: 13-19 digits (spaces or dashes allowed) passing the Luhn check, a known card prefix;
- `iban`: country code, check digits and the ISO 7064 mod-97 checksum (and the country's length when known);
- `ssn`: US social security numbers (ddd-dd-dddd with valid area/group/serial; bare 9 digits only beside
  "SSN" / "social security"); `nino`: UK National Insurance numbers;
- `phone`: international (+CC, 8-15 digits), North American ((555) 123-4567, 555-123-4567), national trunk
  numbers (0 then 9-10 digits), or any 7-15 digits right after a phone word;
- `account`: 6-20 digits right after an account word (account, acct, a/c, routing, sort code, customer number);
- `dob`: a date right after "date of birth", "DOB" or "born on"; `passport`: a number after "passport";
- `name`: names introduced by a cue ("my name is ...", "name: ...", Mr/Mrs/Ms/Dr + a capitalised word,
  "Dear ..."). No statistical name recogniser ships offline with tiergate (no NER model is bundled), so names
  without such a cue are not found; `ip` (IPv4 addresses) is available but off by default.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import ClassVar, Literal

from pydantic import Field

from tiergate.errors import ConfigError
from tiergate.routing.base import RouteDecision, Router, RouteRequest, RouterOptions, RoutingContext

Detector = Literal["email", "phone", "card", "iban", "ssn", "nino", "account", "dob", "passport", "name", "ip"]
DEFAULT_DETECTORS: list[Detector] = ["email", "phone", "card", "iban", "ssn", "nino", "account", "dob", "passport",
                                     "name"]

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
_IBAN = re.compile(r"\b([A-Z]{2})(\d{2})((?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?|[A-Z0-9]{11,30})\b")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_SSN_BARE = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\b\D{0,20}?(?<!\d)(\d{9})(?!\d)")
_NINO = re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(?\d{1,5}\)?){2,6}(?![\w-])")
_PHONE_NANP = re.compile(r"(?<![\w-])(?:\(\d{3}\)[ .-]?|\d{3}[.-])\d{3}[ .-]\d{4}(?![\w-])")
_PHONE_TRUNK = re.compile(r"(?<![\w-])0\d{2,4}[ -]?\d{3,4}[ -]?\d{3,4}(?![\w-])")
_PHONE_CUE = re.compile(
    r"(?i)\b(?:phone|tel|telephone|mobile|cell|call(?: me)?(?: on| at)?|text me(?: on| at)?|whatsapp|fax)\b"
    r"(?:\s*(?:number|no\.?|#))?\s*(?:is|:|on|at)?\s*(\+?\d[\d ().-]{5,22}\d)")
_ACCOUNT = re.compile(
    r"(?i)\b(?:account|acct|a/c|routing|sort code|customer|member|policy)\b(?:\s*(?:number|no\.?|#|id))?"
    r"\s*(?:is|:|#)?\s*(\d[\d -]{4,24}\d)(?![\d-])")
_DOB = re.compile(
    r"(?i)\b(?:date of birth|d\.?o\.?b\.?|born on|birth ?date)\b\s*(?:is|:)?\s*"
    r"(\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}(?:st|nd|rd|th)? [A-Za-z]{3,9},? \d{4}|[A-Za-z]{3,9} \d{1,2}(?:st|nd|rd|th)?,? \d{4})")
_PASSPORT = re.compile(r"(?i)\bpassport\b(?:\s*(?:number|no\.?|#))?\s*(?:is|:)?\s*([A-Z0-9]{6,12})\b")
_NAME_CUE = re.compile(
    r"(?i:\bmy name(?: is|'s)|\bfull name\s*(?:is|:)|\bname\s*:|\bi am called|\bsigned,?)\s+"
    r"([A-Za-z][A-Za-z'-]+(?: [A-Za-z][A-Za-z'-]+){0,2})")
_NAME_TITLE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.? ([A-Z][a-z'-]+)\b|\bDear ([A-Z][a-z'-]+)\b")
_IP = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])")
_NOT_NAMES = frozenset({"a", "an", "the", "not", "is", "and", "or", "here", "there", "sorry", "in", "on", "at",
                        "missing", "wrong", "unknown", "required", "changed", "incorrect", "spelled", "too"})

# IBAN lengths by country (ISO 13616 registry), for the countries most often seen; others need only mod-97.
_IBAN_LENGTH = {
    "AD": 24, "AE": 23, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CR": 22,
    "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24,
    "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29,
    "VG": 24, "XK": 20,
}


def _digits(s: str) -> str:
    return "".join(ch for ch in s if ch.isdigit())


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(country: str, check: str, rest: str) -> bool:
    body = rest.replace(" ", "")
    expected = _IBAN_LENGTH.get(country)
    if expected is not None:
        if len(body) + 4 < expected:
            return False
        body = body[: expected - 4]  # a longer run: the IBAN is its start
    full = country + check + body
    if not 15 <= len(full) <= 34:
        return False
    rearranged = body + country + check
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _cards(text: str) -> int:
    n = 0
    for m in _CARD.finditer(text):
        d = _digits(m.group(0))
        if 13 <= len(d) <= 19 and len(set(d)) > 1 and luhn_ok(d):
            n += 1
    return n


def _ibans(text: str) -> int:
    return sum(1 for m in _IBAN.finditer(text.upper() if "iban" in text.lower() else text)
               if iban_ok(m.group(1), m.group(2), m.group(3)))


def _phones(text: str) -> int:
    n = sum(1 for m in _PHONE_INTL.finditer(text) if 8 <= len(_digits(m.group(0))) <= 15)
    n += sum(1 for _ in _PHONE_NANP.finditer(text))
    n += sum(1 for m in _PHONE_TRUNK.finditer(text) if 10 <= len(_digits(m.group(0))) <= 11)
    if n == 0:
        n += sum(1 for m in _PHONE_CUE.finditer(text) if 7 <= len(_digits(m.group(1))) <= 15)
    return n


def _names(text: str) -> int:
    n = 0
    for m in _NAME_CUE.finditer(text):
        first = m.group(1).split()[0].lower()
        if first not in _NOT_NAMES:
            n += 1
    return n + sum(1 for _ in _NAME_TITLE.finditer(text))


def _count(pattern: re.Pattern[str]) -> Callable[[str], int]:
    return lambda text: sum(1 for _ in pattern.finditer(text))


# kind -> (needs a digit in the text, counter)
_DETECTORS: dict[str, tuple[bool, Callable[[str], int]]] = {
    "email": (False, _count(_EMAIL)),
    "card": (True, _cards),
    "iban": (True, _ibans),
    "ssn": (True, lambda t: _count(_SSN)(t) + _count(_SSN_BARE)(t)),
    "nino": (True, _count(_NINO)),
    "phone": (True, _phones),
    "account": (True, _count(_ACCOUNT)),
    "dob": (True, _count(_DOB)),
    "passport": (True, _count(_PASSPORT)),
    "name": (False, _names),
    "ip": (True, _count(_IP)),
}


def detect_sensitive(text: str, detectors: Iterable[str] = DEFAULT_DETECTORS) -> dict[str, int]:
    """How many of each kind of sensitive data `text` holds (kinds with none are left out)."""
    has_digit = any(ch.isdigit() for ch in text)
    has_at = "@" in text
    found: dict[str, int] = {}
    for kind in detectors:
        needs_digit, counter = _DETECTORS[kind]
        if needs_digit and not has_digit:
            continue
        if kind == "email" and not has_at:
            continue
        n = counter(text)
        if n:
            found[kind] = n
    return found


class PrivacyRouter(Router):
    """Sends requests with personal or regulated data to an on-prem tier, marked on-prem only."""

    kind = "privacy"
    guard: ClassVar[bool] = True
    """Runs before an explicit `model` pin: a pin cannot send private data outside."""

    class Options(RouterOptions):
        tier: str = Field(description="the on-prem tier that takes requests with sensitive data")
        detectors: list[Detector] = Field(default_factory=lambda: list(DEFAULT_DETECTORS),
                                          description="kinds of data to look for (see tiergate.routing.privacy)")
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
