"""Pricing model calls from the genai-prices data as shipped: the package's own figures,
tiers, cached input, overrides, unknown models refused at spec load, and no network."""

from __future__ import annotations

import socket
from decimal import Decimal
from typing import Any

import genai_prices
import pytest
from conftest import SPEC
from genai_prices import data_snapshot

from warden.economics import (
    UnknownModelError,
    Usage,
    price,
    pricing_for,
    worst_case,
)
from warden.errors import SpecError, UsageError
from warden.spec import PriceOverride, load_spec_text

M = Decimal(1_000_000)


def test_a_known_model_costs_what_genai_prices_and_the_price_list_say() -> None:
    # 1,000 input tokens of which 200 were cached, 500 output tokens of gpt-4o-mini:
    # $0.15 / MTok input, $0.075 / MTok cached input, $0.60 / MTok output.
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200)
    ours = price("openai", "gpt-4o-mini", usage)
    theirs = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200),
        "gpt-4o-mini",
        provider_id="openai",
    ).total_price
    by_hand = (800 * Decimal("0.15") + 200 * Decimal("0.075") + 500 * Decimal("0.6")) / M
    assert ours == theirs == by_hand == Decimal("0.000435")
    assert isinstance(ours, Decimal)


def test_a_tier_prices_the_whole_request_once_the_input_passes_its_threshold() -> None:
    # Claude Sonnet 4.5: $3 in / $15 out / $0.30 cache read per MTok up to 200k input
    # tokens; past 200k the whole request costs $6 / $22.50 / $0.60.
    below = Usage(input_tokens=150_000, output_tokens=1_000)
    above = Usage(input_tokens=250_000, output_tokens=1_000, cache_read_tokens=50_000)
    assert (
        price("anthropic", "claude-sonnet-4-5", below)
        == (150_000 * Decimal(3) + 1_000 * Decimal(15)) / M
    )
    assert (
        price("anthropic", "claude-sonnet-4-5", above)
        == (200_000 * Decimal(6) + 50_000 * Decimal("0.6") + 1_000 * Decimal("22.5")) / M
    )


def test_written_cache_costs_more_than_input_and_worst_case_can_include_it() -> None:
    pricing = pricing_for("anthropic", "claude-sonnet-4-5")
    plain = pricing.worst_case(10_000, 1_000)
    assert plain == (10_000 * Decimal(3) + 1_000 * Decimal(15)) / M
    with_writes = pricing.worst_case(10_000, 1_000, cache_write_tokens=10_000)
    assert with_writes == (10_000 * Decimal("3.75") + 1_000 * Decimal(15)) / M
    actual = pricing.price(Usage(10_000, 1_000, cache_write_tokens=10_000))
    assert actual == with_writes > plain


def test_worst_case_takes_the_tier_the_input_hits() -> None:
    cost = worst_case("anthropic", "claude-sonnet-4-5", 250_000, 1_000)
    assert cost == (250_000 * Decimal(6) + 1_000 * Decimal("22.5")) / M
    # It is the most the call can cost: any actual usage with that input costs no more.
    for out in (0, 1, 500, 1_000):
        for cached in (0, 100_000):
            usage = Usage(250_000, out, cache_read_tokens=cached)
            assert price("anthropic", "claude-sonnet-4-5", usage) <= cost


def test_an_override_wins_over_the_shipped_prices() -> None:
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200)
    override = PriceOverride(
        input_per_mtok=Decimal(1), output_per_mtok=Decimal(2), cache_read_per_mtok=Decimal("0.5")
    )
    assert price("openai", "gpt-4o-mini", usage, override) == Decimal("0.0019")
    # Without a cached-input price, cached input costs what input costs.
    plain = PriceOverride(input_per_mtok=Decimal(1), output_per_mtok=Decimal(2))
    assert price("openai", "gpt-4o-mini", usage, plain) == Decimal("0.002")
    assert pricing_for("openai", "gpt-4o-mini", plain).source == "override"


def test_an_override_prices_a_model_the_data_does_not_know() -> None:
    override = PriceOverride(input_per_mtok=Decimal("0.2"), output_per_mtok=Decimal("0.4"))
    pricing = pricing_for(None, "my-local-llama", override)
    assert pricing.price(Usage(1_000_000, 1_000_000)) == Decimal("0.6")
    assert pricing.context_window is None


def test_an_unknown_model_without_override_is_an_error_naming_the_fix() -> None:
    with pytest.raises(UnknownModelError) as caught:
        pricing_for("openai", "my-local-llama")
    assert "'my-local-llama'" in str(caught.value)
    assert "add a 'price:' override" in str(caught.value)
    assert isinstance(caught.value, UsageError)


MODELS_SPEC = (
    SPEC
    + """
models:
  small:
    upstream: openai
    model: gpt-4o-mini
    credential: env:OPENAI_API_KEY
  local:
    upstream: openai
    base_url: http://127.0.0.1:8000/v1
    model: my-local-llama
budgets:
  - name: tenant_daily
    scope: tenant
    period: calendar_day
    usd: 5
    on_exhausted: route:small
    alert_at: [0.5, 0.8]
"""
)


def _line_of(text: str, needle: str) -> int:
    return text.splitlines().index(needle) + 1


def test_a_spec_with_an_unpriced_model_does_not_load_and_says_where() -> None:
    with pytest.raises(SpecError) as caught:
        load_spec_text(MODELS_SPEC, "shop.yaml")
    [issue] = caught.value.issues
    assert issue.path == "models.local.model"
    assert issue.line == _line_of(MODELS_SPEC, "    model: my-local-llama")
    assert "'my-local-llama'" in issue.message and "'price:'" in issue.message


def test_a_spec_whose_models_are_priced_loads_them_and_its_budgets() -> None:
    text = MODELS_SPEC.replace(
        "    model: my-local-llama\n",
        "    model: my-local-llama\n    price: {input_per_mtok: 0.15, output_per_mtok: 0.6}\n",
    )
    spec = load_spec_text(text, "shop.yaml").spec
    local = spec.models["local"]
    assert local.price is not None and local.price.input_per_mtok == Decimal("0.15")
    assert spec.models["small"].pricing_provider == "openai"
    [budget] = spec.budgets
    assert budget.usd == Decimal(5) and budget.route_model == "small"
    assert budget.alert_at == [Decimal("0.5"), Decimal("0.8")]


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        ("{name: b, scope: tenant, period: calendar_day}", "a budget needs a limit"),
        ("{name: b, scope: tenant, usd: 1}", "required field is missing"),
        ("{name: b, scope: tenant, period: run, usd: 1}", "'period: run' applies only to"),
        ("{name: b, scope: run, usd: 1, on_exhausted: route:big}", "not declared under 'models'"),
        ("{name: b, scope: run, usd: 1, alert_at: [0.8, 0.5]}", "in increasing order"),
        ("{name: b, scope: run, usd: 1, on_exhausted: refuse}", "invalid value"),
    ],
)
def test_budget_errors_name_the_line(budget: str, message: str) -> None:
    text = SPEC + f"budgets:\n  - {budget}\n"
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "shop.yaml")
    [issue] = caught.value.issues
    assert message in issue.message
    assert issue.line == _line_of(text, f"  - {budget}")


def test_a_misspelt_model_key_is_an_error_with_its_line() -> None:
    text = SPEC + "models:\n  m:\n    upstream: openai\n    model: gpt-4o\n    timout: 5s\n"
    with pytest.raises(SpecError) as caught:
        load_spec_text(text, "shop.yaml")
    [issue] = caught.value.issues
    assert (issue.path, issue.line) == ("models.m.timout", _line_of(text, "    timout: 5s"))
    assert "did you mean 'timeout'?" in issue.message


def test_specs_without_models_or_budgets_keep_their_fingerprint() -> None:
    # The value computed before models and budgets existed (commit 96c3302).
    expected = "4aeb38654f539dbe0eca53099b34f185345cbb0fa54df35326859031391e5831"
    assert load_spec_text(SPEC, "shop.yaml").fingerprint == expected


def test_prices_come_from_the_shipped_data_without_the_network(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_network(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("pricing tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    # Something else in the process installing other data (as genai-prices' own updater
    # does) changes nothing: Warden prices from the data the installed version ships.
    data_snapshot.set_custom_snapshot(data_snapshot.DataSnapshot([], from_auto_update=True))
    try:
        usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=200)
        assert price("openai", "gpt-4o-mini", usage) == Decimal("0.000435")
        assert price(None, "claude-3-5-haiku-latest", Usage(1_000_000, 0)) == Decimal("0.8")
    finally:
        data_snapshot.set_custom_snapshot(None)


def test_usage_refuses_counts_that_cannot_be_priced_faithfully() -> None:
    with pytest.raises(UsageError, match="cannot exceed input_tokens"):
        Usage(input_tokens=100, output_tokens=0, cache_read_tokens=200)
    with pytest.raises(UsageError, match="non-negative int"):
        Usage(input_tokens=-1, output_tokens=0)
