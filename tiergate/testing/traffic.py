"""Synthetic captured traffic with planted workloads, for discovery tests, demos and docs.

    rows = synthetic_traffic(600, seed=0)         # record dicts, ready for normalize_record / insert_records
    rows[0]["planted"]                             # "support-triage" | "invoice-extraction" | "customer-replies" | "noise"

Four kinds of request, mixed and unlabelled (every record's workload is `workload`, "default" unless given):
support tickets answered with one of five queue labels, invoices answered with a JSON object of fields,
customer reviews answered with a free-text reply (tickets and reviews come from one support application and
share its system prompt), and one-off questions to a general assistant (noise). Token counts are the text
length over four; costs come from the token prices given (None prices leave cost_usd NULL: unpriced).
"""

from __future__ import annotations

import json
import random
import time
from typing import Any

PLANTED = ("support-triage", "invoice-extraction", "customer-replies", "noise")

_TRIAGE = {
    "billing": ["I was charged twice for my {plan} subscription this month", "my invoice shows the wrong amount for {plan}",
                "why did my card get billed again for order {order}", "the {plan} price went up without notice"],
    "technical": ["the {product} app crashes every time I open settings", "I get error {code} when syncing my {product}",
                  "{product} stopped connecting to wifi after the update", "the export button in {product} does nothing"],
    "account": ["I can't log in to my account, the password reset email never arrives", "please change the email on my account",
                "my account got locked after too many attempts", "how do I delete my account and all my data"],
    "shipping": ["order {order} has not arrived yet, it has been two weeks", "the tracking for order {order} stopped updating",
                 "my package for order {order} was delivered to the wrong address", "can you ship order {order} faster"],
    "refund": ["I want a refund for order {order}, the {product} is broken", "I returned the {product} but got no refund",
               "please refund my {plan} plan, I cancelled in time", "refund still pending for order {order}"],
}
# one support application sends both tickets and reviews: the two workloads share its system prompt
_SUPPORT_APP = "You are the customer support assistant of a consumer electronics shop."
_VENDORS = ["Acme GmbH", "Globex Ltd", "Initech Inc", "Umbrella SA", "Stark Supplies", "Wayne Parts", "Hooli BV"]
_REVIEW_TOPICS = ["delivery was late but the {product} works great", "the {product} broke after a week",
                  "customer service was really helpful with my {product}", "the {product} is not as described",
                  "love the new {product}, but the manual is confusing", "the {product} arrived scratched"]
_REPLY_OPENERS = ["Thank you for taking the time to share this.", "We are sorry to hear about your experience.",
                  "Thanks so much for the kind words!", "We appreciate your honest feedback."]
_REPLY_BODIES = ["We have passed your note to the {product} team and will follow up within two days.",
                 "A replacement {product} is on its way; you do not need to send the old one back.",
                 "Our support team will reach out to make this right with your {product}.",
                 "We are glad the {product} is working well for you and will improve the manual."]
# one-off requests to a general assistant: many shapes, so they do not form workloads of their own
_NOISE = ["What is the capital of {country}?", "Write a haiku about {thing}.", "Explain how {thing} works to a child.",
          "Translate 'good morning, {name}' into {language}.", "Give me three ideas for a {thing} themed party.",
          "Summarise the history of {country} in two sentences.", "What rhymes with {thing}?",
          "Suggest a name for a pet {animal}.", "How long should I boil an egg at altitude in {country}?",
          "Tell me a fun fact about {animal}s.", "Is it safe to swim with {animal}s?", "Compose a limerick about {name}.",
          "What should I pack for a week in {country}?", "Convert 37 degrees Celsius to Fahrenheit.",
          "Why is the sky blue?", "Recommend a sci-fi novel for a teenager.", "How do I remove a coffee stain from a shirt?",
          "Write a SQL query that counts rows per day.", "What is the difference between a list and a tuple in Python?",
          "Plan a 20 minute workout without equipment.", "Draft a toast for {name}'s wedding.",
          "Which planet has the most moons?", "How many calories are in a banana?", "Explain compound interest briefly.",
          "Give me a riddle about {thing}.", "What language do people speak in {country}?",
          "Help me name my {thing} podcast.", "How do {animal}s sleep?", "What year did the Berlin wall fall?",
          "Outline a short story set in {country} about {thing}.", "Is {language} hard to learn for English speakers?",
          "List five board games for two players.", "What is a good stretch for lower back pain?",
          "How do I say 'thank you' in {language}?", "Describe the taste of {thing} to someone who never had it."]
_FILL = {
    "plan": ["Pro", "Basic", "Family", "Team", "Premium"], "product": ["router", "thermostat", "headphones", "camera",
    "smartwatch", "blender"], "code": ["E102", "E404", "0x80070005", "SYNC-17"], "country": ["Peru", "Norway", "Kenya",
    "Japan", "Chile", "Portugal"], "thing": ["volcanoes", "autumn", "coffee", "the moon", "trains", "bees"],
    "name": ["Ana", "Luis", "Mei"], "language": ["French", "German", "Italian"], "animal": ["otter", "parrot", "lizard"],
}


def _fill(rng: random.Random, template: str) -> str:
    out = template
    for key, values in _FILL.items():
        while "{" + key + "}" in out:
            out = out.replace("{" + key + "}", rng.choice(values), 1)
    return out.replace("{order}", str(rng.randint(10000, 99999)))


def _triage(rng: random.Random) -> tuple[str, str, str]:
    label = rng.choice(sorted(_TRIAGE))
    text = _fill(rng, rng.choice(_TRIAGE[label]))
    prompt = rng.choice(["Ticket: {t}.", "Support ticket #{n}: {t}. Which queue?", "Customer wrote: \"{t}\""])
    return (_SUPPORT_APP, "Route this ticket to one queue (billing, technical, account, shipping or refund).\n"
            + prompt.format(t=text, n=rng.randint(1000, 9999)), label)


def _invoice(rng: random.Random) -> tuple[str, str, str]:
    vendor, currency = rng.choice(_VENDORS), rng.choice(["EUR", "USD", "GBP"])
    day = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    total = round(rng.uniform(20, 9000), 2)
    text = (f"INVOICE {rng.randint(100, 999)}-{rng.randint(1000, 9999)} from {vendor}, issued {day}. "
            f"{rng.randint(1, 40)} x items. Total due: {total:,.2f} {currency}. Payment within {rng.choice([14, 30, 60])} days.")
    prompt = rng.choice(["Extract vendor, date, total and currency as JSON from this invoice:\n{t}",
                         "Return the invoice fields (vendor, date, total, currency) as a JSON object.\n{t}"])
    answer = json.dumps({"vendor": vendor, "date": day, "total": total, "currency": currency})
    return "You extract fields from documents and answer with JSON only.", prompt.format(t=text), answer


def _reply(rng: random.Random) -> tuple[str, str, str]:
    review = _fill(rng, rng.choice(_REVIEW_TOPICS))
    prompt = rng.choice(["Write a short, friendly reply to this customer review: \"{r}\"",
                         "Draft our public reply to the review below.\nReview: {r}"])
    answer = f"{rng.choice(_REPLY_OPENERS)} {_fill(rng, rng.choice(_REPLY_BODIES))} Best regards, the support team."
    return _SUPPORT_APP, prompt.format(r=review), answer


def _noise(rng: random.Random) -> tuple[str, str, str]:
    question = _fill(rng, rng.choice(_NOISE))
    words = rng.sample(["sure", "here", "is", "an", "answer", "that", "covers", "it", "well", "in", "short"], 8)
    return "You are a helpful assistant.", question, " ".join(words).capitalize() + "."


_MAKERS = {"support-triage": _triage, "invoice-extraction": _invoice, "customer-replies": _reply, "noise": _noise}


def synthetic_traffic(
    n: int,
    *,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    start: float | None = None,
    span_s: float = 7 * 86400.0,
    workload: str = "default",
    tier: str = "frontier",
    model: str = "gpt-4o",
    input_per_mtok: float | None = 2.5,
    output_per_mtok: float | None = 10.0,
) -> list[dict[str, Any]]:
    """`n` record dicts spread evenly over `span_s` seconds from `start` (default: `span_s` ago), each with
    its planted workload under the extra key "planted" (dropped by normalize_record)."""
    rng = random.Random(seed)
    weights = mix or {"support-triage": 0.45, "invoice-extraction": 0.25, "customer-replies": 0.2, "noise": 0.1}
    names = [w for w in PLANTED if weights.get(w, 0) > 0]
    t0 = (time.time() - span_s) if start is None else start
    priced = input_per_mtok is not None and output_per_mtok is not None
    rows = []
    for i in range(n):
        planted = rng.choices(names, weights=[weights[w] for w in names])[0]
        system, user, answer = _MAKERS[planted](rng)
        prompt_tokens = (len(system) + len(user)) // 4 + 8
        completion_tokens = max(1, len(answer) // 4)
        cost = (prompt_tokens * (input_per_mtok or 0) + completion_tokens * (output_per_mtok or 0)) / 1e6
        rows.append({
            "request_id": f"req_syn_{seed}_{i}", "created_at": t0 + span_s * i / max(1, n - 1), "workload": workload,
            "model": model, "tier": tier, "route_reason": "default", "role": "primary", "status": "ok",
            "http_status": 200, "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "answer": answer, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "latency_ms": round(rng.uniform(300, 1500), 1), "cost_usd": cost if priced else None, "planted": planted,
        })
    return rows
