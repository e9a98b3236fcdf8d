"""Price book lookups and overrides, and the per-request pricer, checked by hand."""

from __future__ import annotations

import warnings
from datetime import date
from pathlib import Path

import pytest

from tiergate.config import PriceConfig
from tiergate.costs.pricebook import UnknownPriceWarning, load_pricebook, name_candidates
from tiergate.costs.pricing import Pricer, build_pricer
from tiergate.errors import ConfigError


@pytest.fixture(scope="module")
def book():  # type: ignore[no-untyped-def]
    return load_pricebook()


def _override(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return path


def test_shipped_book_is_dated_and_covers_common_models(book) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(book.as_of, date)
    for name in ["gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini", "claude-sonnet-4",
                 "claude-3-5-haiku", "gemini-2.5-flash", "gemini-2.5-pro", "mistral-small", "llama-3.1-8b-instruct"]:
        price = book.model(name)
        assert price is not None and price.input_per_mtok > 0 and price.output_per_mtok > 0, name
    for name in ["a10g", "l4", "a100", "h100", "cpu-small"]:
        assert book.instance(name) is not None, name
    gpt4o = book.model("gpt-4o")
    assert (gpt4o.input_per_mtok, gpt4o.output_per_mtok) == (2.50, 10.00)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("GPT-4o", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),  # its own, higher price wins over the stripped name
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("Claude Sonnet", "claude-sonnet-4"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("gemini-2.5-flash-preview-05-20", "gemini-2.5-flash"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "ft:gpt-4o-mini"),
        ("gpt-4-1106-preview", "gpt-4-turbo"),
        ("o4-mini-2025-04-16", "o4-mini"),
    ],
)
def test_lookup_by_alias_case_prefix_and_dated_suffix(book, given: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        price = book.model(given)
    assert price is not None and price.name == expected


def test_dated_entry_keeps_its_own_price(book) -> None:  # type: ignore[no-untyped-def]
    assert book.model("gpt-4o-2024-05-13").input_per_mtok == 5.00
    assert book.model("gpt-4o-2024-11-20").input_per_mtok == 2.50


def test_candidates_strip_one_suffix_at_a_time() -> None:
    assert name_candidates("claude-3-5-sonnet-v2@20241022") == [
        "claude-3-5-sonnet-v2@20241022", "claude-3-5-sonnet-v2", "claude-3-5-sonnet"]


def test_unknown_model_warns_and_is_none_never_zero(book) -> None:  # type: ignore[no-untyped-def]
    with pytest.warns(UnknownPriceWarning, match=r"'gpt-4o-mini-tts' is not in the price book.*unknown, not zero.*gpt-4o-mini"):
        assert book.model("gpt-4o-mini-tts") is None
    with pytest.warns(UnknownPriceWarning, match="instance 'tpu-v9'"):
        assert book.instance("tpu-v9") is None


def test_instance_by_provider_name(book) -> None:  # type: ignore[no-untyped-def]
    a10g = book.instance("G5.XLARGE")
    assert a10g.name == "a10g"
    assert a10g.monthly_usd == pytest.approx(a10g.hourly_usd * 730)


def test_override_merges_field_by_field(tmp_path: Path) -> None:
    path = _override(tmp_path, """
as_of: "2026-01-01"
models:
  gpt-4o: {input_per_mtok: 2.00}          # negotiated input price; output stays the shipped 10.00
  acme-small: {input_per_mtok: 0.05, output_per_mtok: 0.10, aliases: [acme-s]}
self_hosted:
  triage-7b: {instance: a10g, instances: 2, throughput_rps: 4, fixed_monthly_usd: 500}
""")
    book = load_pricebook(path)
    assert book.as_of == date(2026, 1, 1)
    gpt4o = book.model("gpt-4o")
    assert (gpt4o.input_per_mtok, gpt4o.output_per_mtok) == (2.00, 10.00)
    assert book.model("ACME-S").output_per_mtok == 0.10
    sh = book.model("triage-7b")
    hourly = 2 * book.instance("a10g").hourly_usd
    assert sh.kind == "self_hosted"
    assert sh.per_request_usd == pytest.approx(hourly / (4 * 3600))
    assert sh.fixed_monthly_usd == 500
    assert load_pricebook().model("gpt-4o").input_per_mtok == 2.50  # the shipped book is untouched


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models:\n  gpt-4o: {input_per_mtok: -1}\n", "models.gpt-4o.input_per_mtok: Input should be greater than or equal to 0"),
        ("models:\n  gpt-4o: {input_price: 1}\n", "models.gpt-4o.input_price: unknown key"),
        ("models:\n  new-model: {input_per_mtok: 1}\n", "models.new-model.output_per_mtok: Field required"),
        ("self_hosted:\n  x: {instance: nope, throughput_rps: 1}\n", "self_hosted.x.instance: unknown instance 'nope'"),
        ("models:\n  my-4o: {input_per_mtok: 1, output_per_mtok: 1, aliases: [gpt-4o-mini]}\n", "also models.gpt-4o-mini"),
        ("as_of: yesterday\n", "as_of: Input should be a valid date"),
        ("models: [1, 2\n", "not valid YAML"),
        ("models:\n  gpt-4o: {input_per_mtok: .inf}\n", "models.gpt-4o.input_per_mtok: Input should be a finite number"),
        ("instances:\n  a10g: {hourly_usd: .nan}\n", "instances.a10g.hourly_usd: Input should be a finite number"),
    ],
)
def test_bad_override_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _override(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_pricebook(path)
    assert str(path) in err.value.message
    assert message in err.value.message


def test_missing_override_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="price-book file not found"):
        load_pricebook(tmp_path / "nope.yaml")


# --- the pricer -------------------------------------------------------------------------------------------

def test_explicit_token_prices() -> None:
    pricer = build_pricer(PriceConfig(input_per_mtok=2.50, output_per_mtok=10.00), None)
    # 500 x 2.50 / 1e6 + 20 x 10.00 / 1e6 = 0.00125 + 0.0002
    assert pricer.cost(500, 20) == pytest.approx(0.00145)
    assert not pricer.unknown and pricer.source == "config"


def test_book_prices_by_name_and_explicit_field_wins(book) -> None:  # type: ignore[no-untyped-def]
    pricer = build_pricer(PriceConfig(book="gpt-4o-mini"), book)
    assert pricer.cost(1000, 100) == pytest.approx(1000 * 0.15e-6 + 100 * 0.60e-6)  # 0.00021
    assert pricer.source == "book:gpt-4o-mini"
    negotiated = build_pricer(PriceConfig(book="gpt-4o-mini", input_per_mtok=0.10), book)
    assert negotiated.cost(1000, 100) == pytest.approx(1000 * 0.10e-6 + 100 * 0.60e-6)


def test_model_fallback_when_config_has_no_price(book) -> None:  # type: ignore[no-untyped-def]
    pricer = build_pricer(PriceConfig(), book, model="claude-3-5-haiku-20241022")
    assert pricer.cost(2000, 500) == pytest.approx(2000 * 0.80e-6 + 500 * 4.00e-6)  # 0.0036
    assert pricer.input_per_mtok == pytest.approx(0.80)


def test_hourly_infrastructure_and_per_request_fee() -> None:
    pricer = build_pricer(PriceConfig(hourly_usd=3.6, throughput_rps=2.0, per_request_usd=0.001), None)
    # 3.6 USD/h / (2 req/s x 3600 s/h) = 0.0005 USD per request, + 0.001 fixed; tokens are free
    assert pricer.cost(10_000, 10_000) == pytest.approx(0.0015)
    assert not pricer.unknown


def test_self_hosted_book_entry(tmp_path: Path) -> None:
    book = load_pricebook(_override(tmp_path, "self_hosted:\n  triage-7b: {hourly_usd: 1.8, instances: 2, throughput_rps: 5}\n"))
    pricer = build_pricer(PriceConfig(book="triage-7b"), book)
    assert pricer.cost(500, 20) == pytest.approx(3.6 / (5 * 3600))  # 0.0002
    assert pricer.source == "book:triage-7b"


def test_unknown_book_name_warns_and_is_flagged(book) -> None:  # type: ignore[no-untyped-def]
    with pytest.warns(UnknownPriceWarning, match="'no-such-model'"):
        pricer = build_pricer(PriceConfig(book="no-such-model", hourly_usd=3.6, throughput_rps=1.0), book)
    assert pricer.unknown and pricer.source == "unknown"
    assert pricer.cost(100, 100) == pytest.approx(0.001)  # only the known hourly part


def test_unknown_model_fallback_is_flagged_and_warn_false_is_quiet(book) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pricer = build_pricer(PriceConfig(), book, model="house-model-x", warn=False)
        assert pricer.unknown
        assert build_pricer(PriceConfig(), book).unknown  # nothing set, no model: unknown, nothing to name


def test_explicit_zero_is_a_known_price(book) -> None:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pricer = build_pricer(PriceConfig(input_per_mtok=0, output_per_mtok=0), book, model="house-model-x")
    assert not pricer.unknown and pricer.cost(1000, 1000) == 0.0


def test_pricer_is_a_small_immutable_value() -> None:
    pricer = Pricer(input_usd_per_token=1e-6, output_usd_per_token=2e-6, per_request_usd=0.5)
    assert pricer.cost(3, 4) == pytest.approx(0.5 + 3e-6 + 8e-6)
    with pytest.raises(AttributeError):
        pricer.per_request_usd = 1.0  # type: ignore[misc]
    assert not hasattr(pricer, "__dict__")
