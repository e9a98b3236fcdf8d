"""Personal and regulated data in text: where it is (`find_sensitive`), how much of each kind
(`detect_sensitive`, what the privacy router decides by) and text with it replaced by placeholders
(`scrub_text`, what `--scrub-pii` writes). One set of detectors serves all three, so what the gateway keeps
on-prem is what a dataset export scrubs.

    find_sensitive("mail jo@x.com")        -> [Span(5, 13, "email")]
    detect_sensitive("mail jo@x.com")      -> {"email": 1}
    scrub_text("mail jo@x.com, card 4111 1111 1111 1111")  -> ("mail [EMAIL], card [CARD]", Counter(...))

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

Scrubbing replaces the kinds in SCRUB_KINDS with [EMAIL], [PHONE], [CARD], [ACCOUNT] (IBANs and account
numbers), [SSN], [NINO], [DOB], [PASSPORT], and any other run of 9 or more digits with [ACCOUNT]. Names are
not scrubbed by default: found only by their cues, they would leave an extraction example's name field
pointing at text that is gone. Labels of classification datasets are never touched; extraction and generation
outputs are scrubbed like inputs so the two stay consistent.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

from tiergate.data.dataset import Dataset, Example

Detector = Literal["email", "phone", "card", "iban", "ssn", "nino", "account", "dob", "passport", "name", "ip"]
DEFAULT_DETECTORS: list[Detector] = ["email", "phone", "card", "iban", "ssn", "nino", "account", "dob", "passport",
                                     "name"]

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<![\d-])[2-6]\d{3}(?:[ -]?\d){9,15}(?![\d-])")
_IBAN = re.compile(r"\b([A-Z]{2})(\d{2})((?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?|[A-Z0-9]{11,30})\b")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")
_SSN_BARE = re.compile(
    r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\b\D{0,20}?(?<!\d)(\d{3}[ ]?\d{2}[ ]?\d{4})(?![\d-])")
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
_PASSPORT = re.compile(r"(?i)\bpassport\b(?:\s*(?:number|no\.?|#))?\s*(?:is|:)?\s*((?=[A-Z]*\d)[A-Z0-9]{6,12})\b")
_NAME_CUE = re.compile(
    r"(?i:\bmy name(?: is|'s)|\bfull name\s*(?:is|:)|\bname\s*:|\bi am called|\bsigned,?)\s+"
    r"([A-Za-z][A-Za-z'-]+(?: [A-Za-z][A-Za-z'-]+){0,2})")
_NAME_TITLE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof)\.? ([A-Z][a-z'-]+)\b|\bDear ([A-Z][a-z'-]+)\b")
_LONG_DIGITS = re.compile(r"(?<!\d)\d{9,}(?!\d)")  # scrubbing only: any other long number, as an account
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


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    kind: str


def _matches(pattern: re.Pattern[str], group: int = 0) -> Callable[[str], Iterator[tuple[int, int]]]:
    return lambda text: (m.span(group) for m in pattern.finditer(text))


def _cards(text: str) -> Iterator[tuple[int, int]]:
    for m in _CARD.finditer(text):
        d = _digits(m.group(0))
        if 13 <= len(d) <= 19 and len(set(d)) > 1 and luhn_ok(d):
            yield m.span()


def _ibans(text: str) -> Iterator[tuple[int, int]]:
    upper = text.upper()
    seen = upper if "iban" in text.lower() and len(upper) == len(text) else text  # lower-case IBANs after "IBAN"
    for m in _IBAN.finditer(seen):
        if iban_ok(m.group(1), m.group(2), m.group(3)):
            yield m.span()


def _ssns(text: str) -> Iterator[tuple[int, int]]:
    yield from _matches(_SSN)(text)
    yield from _matches(_SSN_BARE, 1)(text)


def _phones(text: str) -> Iterator[tuple[int, int]]:
    found = [m.span() for m in _PHONE_INTL.finditer(text) if 8 <= len(_digits(m.group(0))) <= 15]
    found += [m.span() for m in _PHONE_NANP.finditer(text)]
    found += [m.span() for m in _PHONE_TRUNK.finditer(text) if 10 <= len(_digits(m.group(0))) <= 11]
    if not found:  # a bare number counts as a phone only right after a phone word
        found = [m.span(1) for m in _PHONE_CUE.finditer(text) if 7 <= len(_digits(m.group(1))) <= 15]
    yield from found


def _names(text: str) -> Iterator[tuple[int, int]]:
    for m in _NAME_CUE.finditer(text):
        if m.group(1).split()[0].lower() not in _NOT_NAMES:
            yield m.span(1)
    for m in _NAME_TITLE.finditer(text):
        yield m.span(1) if m.group(1) else m.span(2)


# kind -> (needs a digit in the text, span finder)
_DETECTORS: dict[str, tuple[bool, Callable[[str], Iterator[tuple[int, int]]]]] = {
    "email": (False, _matches(_EMAIL)),
    "card": (True, _cards),
    "iban": (True, _ibans),
    "ssn": (True, _ssns),
    "nino": (True, _matches(_NINO)),
    "phone": (True, _phones),
    "account": (True, _matches(_ACCOUNT, 1)),
    "dob": (True, _matches(_DOB, 1)),
    "passport": (True, _matches(_PASSPORT, 1)),
    "name": (False, _names),
    "ip": (True, _matches(_IP)),
}


def find_sensitive(text: str, detectors: Iterable[str] = DEFAULT_DETECTORS) -> list[Span]:
    """Every sensitive span `text` holds, of the given kinds, in text order; where two overlap, the one found
    by the earlier detector in `detectors` stays (an IBAN is not also an account number)."""
    has_digit = any(ch.isdigit() for ch in text)
    spans: list[Span] = []
    for kind in dict.fromkeys(detectors):
        needs_digit, finder = _DETECTORS[kind]
        if (needs_digit and not has_digit) or (kind == "email" and "@" not in text):
            continue
        for start, end in finder(text):
            if not any(start < s.end and s.start < end for s in spans):
                spans.append(Span(start, end, kind))
    return sorted(spans, key=lambda s: s.start)


def detect_sensitive(text: str, detectors: Iterable[str] = DEFAULT_DETECTORS) -> dict[str, int]:
    """How many of each kind of sensitive data `text` holds (kinds with none are left out)."""
    return dict(Counter(s.kind for s in find_sensitive(text, detectors)))


SCRUB_KINDS: list[Detector] = ["email", "card", "iban", "ssn", "nino", "account", "phone", "dob", "passport"]
_PLACEHOLDER = {"iban": "ACCOUNT"}


def scrub_text(text: str, kinds: Iterable[str] = SCRUB_KINDS) -> tuple[str, Counter[str]]:
    """`text` with the sensitive spans of `kinds` replaced by placeholders ([EMAIL], [CARD], ...) and any other
    run of 9+ digits by [ACCOUNT]; the placeholders' counts."""
    counts: Counter[str] = Counter()
    out, at = [], 0
    for s in find_sensitive(text, kinds):
        tag = _PLACEHOLDER.get(s.kind, s.kind.upper())
        out.append(text[at:s.start] + f"[{tag}]")
        counts[tag] += 1
        at = s.end
    text = "".join(out) + text[at:]

    def long_digits(m: re.Match[str]) -> str:
        counts["ACCOUNT"] += 1
        return "[ACCOUNT]"

    return _LONG_DIGITS.sub(long_digits, text), counts


def _scrub_value(value: Any, counts: Counter[str]) -> Any:
    if isinstance(value, str):
        clean, c = scrub_text(value)
        counts.update(c)
        return clean
    if isinstance(value, list):
        return [_scrub_value(v, counts) for v in value]
    if isinstance(value, dict):
        return {k: (v if k == "role" else _scrub_value(v, counts)) for k, v in value.items()}
    return value


def scrub_value(value: Any) -> tuple[Any, Counter[str]]:
    """`value` with PII scrubbed from every string in it (chat messages' roles are kept), and the counts."""
    counts: Counter[str] = Counter()
    return _scrub_value(value, counts), counts


def scrub_dataset(dataset: Dataset) -> Dataset:
    """A copy with PII scrubbed from inputs (and from outputs, except classification labels).
    The counts per kind are left in `meta["pii_scrubbed"]`."""
    counts: Counter[str] = Counter()
    examples = []
    for ex in dataset:
        inp = _scrub_value(ex.input, counts)
        out = ex.output if dataset.task == "classification" else _scrub_value(ex.output, counts)
        examples.append(Example(inp, out, ex.line))
    meta = dict(dataset.meta, pii_scrubbed=dict(counts))
    return replace(dataset, examples=examples, meta=meta)
