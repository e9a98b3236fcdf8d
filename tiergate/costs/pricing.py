"""Per-request cost of a tier, for the gateway's hot path.

    pricer = build_pricer(config.tiers["frontier"].price, book, model="gpt-4o")
    pricer.cost(prompt_tokens=500, completion_tokens=20)    # 0.00145 (USD)
    pricer.unknown                                          # True when no price could be found

Where the token prices come from, in order:
1. `price.book` names a price-book entry: its prices (an API model's token prices, or a self-hosted tier's
   per-request infrastructure cost and fixed monthly costs). Token prices set explicitly in the PriceConfig
   still win (a negotiated rate on a listed model).
2. Otherwise the PriceConfig's own fields, when any price field was set (explicit zeros are a known price).
3. Otherwise, when nothing was set, the book entry for `model` (the model the tier sends upstream).
Then `per_request_usd` and `hourly_usd / (throughput_rps * 3600)` are added to every request. When no price
is found the pricer is `unknown` (its cost() counts only what is known) and a warning names the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from tiergate.config import PriceConfig
from tiergate.costs.pricebook import PriceBook, load_pricebook

_PRICE_FIELDS = frozenset({"input_per_mtok", "output_per_mtok", "per_request_usd", "hourly_usd", "throughput_rps"})


@dataclass(frozen=True, slots=True)
class Pricer:
    """USD per request from token counts: three multiplies and two adds."""

    input_usd_per_token: float = 0.0
    output_usd_per_token: float = 0.0
    per_request_usd: float = 0.0
    unknown: bool = False
    source: str = "config"
    """Where the prices came from: "config", "book:<entry>", or "unknown"."""
    fixed_monthly_usd: float = 0.0
    """Fixed monthly costs of a self-hosted book entry; not part of cost(), reported separately."""

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        return (self.per_request_usd + prompt_tokens * self.input_usd_per_token
                + completion_tokens * self.output_usd_per_token)

    @property
    def input_per_mtok(self) -> float:
        return self.input_usd_per_token * 1e6

    @property
    def output_per_mtok(self) -> float:
        return self.output_usd_per_token * 1e6


def build_pricer(
    price: PriceConfig, book: PriceBook | None, *, model: str | None = None, warn: bool = True
) -> Pricer:
    """The pricer of one tier (and, for a tier without a fixed model, one upstream model).

    `book` None loads the shipped price book only when a lookup is needed. `warn` False leaves the warning
    to the caller (the gateway warns once per tier and labels the records)."""
    explicit = price.model_fields_set & _PRICE_FIELDS
    in_mtok, out_mtok = price.input_per_mtok, price.output_per_mtok
    per_request = price.per_request_usd
    fixed_monthly = 0.0
    source = "config"
    unknown = False

    lookup = price.book if price.book else (model if not explicit else None)
    if lookup is not None or not explicit:
        entry = None
        if lookup is not None:
            entry = (book if book is not None else load_pricebook()).model(lookup, warn=warn)
        if entry is None:
            tokens_given = {"input_per_mtok", "output_per_mtok"} <= price.model_fields_set
            unknown = not tokens_given
            source = "unknown" if unknown else "config"
        else:
            source = f"book:{entry.name}"
            if "input_per_mtok" not in price.model_fields_set:
                in_mtok = entry.input_per_mtok
            if "output_per_mtok" not in price.model_fields_set:
                out_mtok = entry.output_per_mtok
            per_request += entry.per_request_usd
            fixed_monthly = entry.fixed_monthly_usd

    if price.hourly_usd and price.throughput_rps:
        per_request += price.hourly_usd / (price.throughput_rps * 3600.0)

    return Pricer(
        input_usd_per_token=in_mtok / 1e6,
        output_usd_per_token=out_mtok / 1e6,
        per_request_usd=per_request,
        unknown=unknown,
        source=source,
        fixed_monthly_usd=fixed_monthly,
    )
