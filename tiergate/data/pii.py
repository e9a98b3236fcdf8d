"""PII scrubbing: emails, phone numbers, payment card numbers and bank account numbers become placeholders.

    scrub_text("mail jo@x.com, card 4111 1111 1111 1111")  -> ("mail [EMAIL], card [CARD]", Counter(...))

Order matters: cards (13-19 digits passing the Luhn check) go first, then IBANs and numbers next to an
account word, then phone numbers, then any other run of 9+ digits (treated as an account number). Labels of
classification datasets are never touched; extraction and generation outputs are scrubbed like inputs so the
two stay consistent.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from typing import Any

from tiergate.data.dataset import Dataset, Example

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
ACCOUNT_NEAR_WORD = re.compile(
    r"(?i)\b(account|acct|a/c|iban|routing|sort code)(\s*(?:number|no\.?|#)?\s*[:#]?\s*)(\d[\d -]{4,22}\d)\b")
PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w-])")
LONG_DIGITS = re.compile(r"(?<!\d)\d{9,}(?!\d)")
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _digits(s: str) -> str:
    return re.sub(r"\D", "", s)


def scrub_text(text: str) -> tuple[str, Counter[str]]:
    """Replace PII in `text` with [EMAIL], [CARD], [ACCOUNT] and [PHONE]; return the text and counts."""
    counts: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], tag: str, s: str, keep: Any = None) -> str:
        def repl(m: re.Match[str]) -> str:
            if keep is not None and not keep(m):
                return m.group(0)
            counts[tag] += 1
            return f"[{tag}]"
        return pattern.sub(repl, s)

    def account_repl(m: re.Match[str]) -> str:
        counts["ACCOUNT"] += 1
        return m.group(1) + m.group(2) + "[ACCOUNT]"

    text = sub(EMAIL, "EMAIL", text)
    text = sub(CARD, "CARD", text, keep=lambda m: luhn_ok(_digits(m.group(0))))
    text = sub(IBAN, "ACCOUNT", text)
    text = ACCOUNT_NEAR_WORD.sub(account_repl, text)
    text = sub(PHONE, "PHONE", text,
               keep=lambda m: 7 <= len(_digits(m.group(0))) <= 15 and not ISO_DATE.match(m.group(0)))
    text = sub(LONG_DIGITS, "ACCOUNT", text)
    return text, counts


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
