"""Prices of model calls, from the ``genai-prices`` data as the installed package ships it.

Why genai-prices: it is maintained, it knows tiered prices (a whole request priced at a
higher rate once its input passes a threshold, e.g. Claude Sonnet 4.5 past 200k input
tokens), cached-input and cache-write prices, time-limited prices and per-request fees,
and it computes them in ``Decimal``. Warden does not re-implement any of that: a call is
priced by the package's own ``ModelInfo.calc_price`` (or, for a spec override, its
``ModelPrice.calc_price`` over the override's prices).

No network, ever: the package can update its data in the background (``UpdatePrices``),
which Warden never starts, and its module-level lookups would use such an update if
anything in the process started one. So this module builds its own snapshot from the
data the package ships (``genai_prices.data``) and prices only from that: a price is the
one of the installed version, reproducible, and changes only with an upgrade.

Token counts follow genai-prices: ``input_tokens`` counts *all* input tokens, the cached
ones (``cache_read_tokens``) and the ones written to the cache (``cache_write_tokens``)
included. (OpenAI reports usage this way; Anthropic reports the three separately, so its
client adds them up.)
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from genai_prices import Usage as _GenaiUsage
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider

from warden.errors import UsageError
from warden.spec._economics import PriceOverride

#: Money is a ``Decimal`` amount of US dollars, never a float.
Money = Decimal

_MTOK = 1_000_000


class UnknownModelError(UsageError):
    """A model the shipped price data does not know and that has no price override."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens one model call used. ``input_tokens`` includes the cached and cache-written
    input tokens (see the module docstring)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"Usage.{name} must be a non-negative int, got {value!r}")
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise UsageError(
                "Usage.input_tokens counts all input tokens, the cached ones included: "
                f"cache_read_tokens ({self.cache_read_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) cannot exceed input_tokens ({self.input_tokens})"
            )

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens: what a token budget counts."""
        return self.input_tokens + self.output_tokens

    def _genai(self) -> _GenaiUsage:
        return _GenaiUsage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
        )


_snapshot_lock = threading.Lock()
_snapshot: DataSnapshot | None = None


def _shipped() -> DataSnapshot:
    """The price data of the installed genai-prices, never an auto-updated copy."""
    global _snapshot
    if _snapshot is None:
        with _snapshot_lock:
            if _snapshot is None:
                from genai_prices.data import providers  # ~20 ms: loaded on first use

                _snapshot = DataSnapshot(providers=providers, from_auto_update=False)
    return _snapshot


@functools.cache
def data_version() -> str:
    """The installed genai-prices version: the prices in force (for events and reports).

    Read once per process, as the prices are (``_shipped``): upgrading the package on
    disk while the process runs changes neither. Every model call's ``usage`` event names
    it, and reading the package metadata each time cost ~2.5 ms a call."""
    from importlib.metadata import version

    return version("genai-prices")


@dataclass(frozen=True, slots=True)
class OutputLine:
    """What a call costs as a function of its output tokens, for a given input:
    ``base + per_output_token * n`` (genai-prices picks the tier from the input alone,
    so the output price of a call is fixed once its input is)."""

    base: Money
    per_output_token: Money


@dataclass(frozen=True)
class ModelPricing:
    """The prices of one model, resolved once (at spec load) and used for every call."""

    provider: str | None
    model: str
    #: where the prices come from
    source: Literal["genai-prices", "override"]
    #: input plus output tokens the model accepts, when the price data or the spec says
    context_window: int | None
    _info: ModelInfo | None = field(default=None, repr=False)
    _provider: Provider | None = field(default=None, repr=False)
    _override: ModelPrice | None = field(default=None, repr=False)

    def price(self, usage: Usage, *, at: datetime | None = None) -> Money:
        """What ``usage`` costs, in USD, at the prices in force at ``at`` (default: now).

        Pass the time the request was sent, both here and to ``worst_case``, so a price
        change between reservation and settlement (a dated price, an off-peak window)
        cannot make the two disagree.
        """
        genai = usage._genai()
        if self._override is not None:
            return self._override.calc_price(genai)["total_price"]
        assert self._info is not None and self._provider is not None
        when = at or datetime.now(UTC)
        return self._info.calc_price(
            genai, self._provider, genai_request_timestamp=when
        ).total_price

    def worst_case(
        self,
        input_tokens: int,
        max_output_tokens: int,
        *,
        cache_write_tokens: int = 0,
        at: datetime | None = None,
    ) -> Money:
        """The most a call with this input can cost if it produces ``max_output_tokens``:
        what a budget reserves before the call.

        No input is assumed cached (cached input is cheaper). Input the request may write
        to the provider's cache (Anthropic ``cache_control``) costs more than plain input,
        so a caller that sends cache markers passes how many input tokens they may cover
        as ``cache_write_tokens``. The tier is the one the input hits, as genai-prices
        decides it; an ``input_tokens`` that is an upper bound can only pick the same or a
        higher tier.
        """
        usage = Usage(
            input_tokens=input_tokens,
            output_tokens=max_output_tokens,
            cache_write_tokens=cache_write_tokens,
        )
        return self.price(usage, at=at)

    def output_line(
        self, input_tokens: int, *, cache_write_tokens: int = 0, at: datetime | None = None
    ) -> OutputLine:
        """``worst_case`` as a straight line in the output tokens (see ``OutputLine``).

        Checked, not assumed: if the package ever prices output non-linearly for a fixed
        input, this raises rather than let a reservation be sized wrongly.
        """
        when = at or datetime.now(UTC)

        def cost(n: int) -> Money:
            return self.worst_case(input_tokens, n, cache_write_tokens=cache_write_tokens, at=when)

        base = cost(0)
        per_mtok = cost(_MTOK) - base
        if cost(2 * _MTOK) - base != 2 * per_mtok:
            raise UsageError(
                f"the price of model {self.model!r} is not linear in output tokens; "
                "budgets cannot size its reservations (add a 'price:' override)"
            )
        return OutputLine(base, per_mtok / _MTOK)


def pricing_for(
    provider: str | None, model: str, override: PriceOverride | None = None
) -> ModelPricing:
    """Resolve the prices of ``model`` (at ``provider``, or the provider genai-prices
    guesses from the model name when None): the override if given, else the shipped data.

    Raises ``UnknownModelError`` naming the model when neither has a price.
    """
    if override is not None:
        prices = ModelPrice(
            input_mtok=override.input_per_mtok,
            output_mtok=override.output_per_mtok,
            cache_read_mtok=override.cache_read_per_mtok,
            cache_write_mtok=override.cache_write_per_mtok,
        )
        known = _lookup(provider, model)
        window = known[1].context_window if known is not None else None
        return ModelPricing(provider, model, "override", window, _override=prices)
    found = _lookup(provider, model)
    if found is None:
        where = f" at provider {provider!r}" if provider else ""
        raise UnknownModelError(
            f"no price for model {model!r}{where} in the installed genai-prices data "
            f"({data_version()}): add a 'price:' override to the model in the spec "
            "(input_per_mtok and output_per_mtok, in USD per million tokens), or name the "
            "provider that sells it with 'provider:'"
        )
    prov, info = found
    return ModelPricing(provider, model, "genai-prices", info.context_window, info, prov)


def _lookup(provider: str | None, model: str) -> tuple[Provider, ModelInfo] | None:
    try:
        return _shipped().find_provider_model(model, None, provider, None)
    except LookupError:
        return None


def price(
    provider: str | None,
    model: str,
    usage: Usage,
    override: PriceOverride | None = None,
    *,
    at: datetime | None = None,
) -> Money:
    """What a call to ``model`` that used ``usage`` costs in USD (see ``ModelPricing``)."""
    return pricing_for(provider, model, override).price(usage, at=at)


def worst_case(
    provider: str | None,
    model: str,
    input_tokens: int,
    max_output_tokens: int,
    override: PriceOverride | None = None,
    *,
    cache_write_tokens: int = 0,
    at: datetime | None = None,
) -> Money:
    """The most such a call can cost (see ``ModelPricing.worst_case``)."""
    return pricing_for(provider, model, override).worst_case(
        input_tokens, max_output_tokens, cache_write_tokens=cache_write_tokens, at=at
    )


__all__ = [
    "ModelPricing",
    "Money",
    "OutputLine",
    "UnknownModelError",
    "Usage",
    "data_version",
    "price",
    "pricing_for",
    "worst_case",
]
