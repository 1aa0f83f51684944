"""The economics part of a workflow spec: the models a workflow calls and its budgets.

Loaded and validated like the rest of the spec (unknown keys are errors with their line).
Whether a model can be priced is checked when the spec loads (``_loader.check_references``):
a model that the shipped price data does not know and that has no ``price:`` override does
not load, so a call is never priced at $0 by accident.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from warden.spec._base import Duration, Identifier, _Model

# Money in the spec is Decimal (YAML floats are read through their text, so 0.15 is 0.15).
Usd = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]


class BudgetScope(StrEnum):
    """Whose spend a budget caps. The counter is shared by every call with the same key:

    - ``run``: one run; ``end_user``: one end user of one tenant; ``agent``: one agent
      identity; ``tenant``: one tenant; ``workflow``: one workflow; ``global``: everything
      that declares a budget of that name on this store.
    """

    RUN = "run"
    END_USER = "end_user"
    AGENT = "agent"
    TENANT = "tenant"
    WORKFLOW = "workflow"
    GLOBAL = "global"


class BudgetPeriod(StrEnum):
    """When spend stops counting.

    ``run``: never (the run's lifetime; only for ``scope: run``). ``calendar_*``: the UTC
    day, the ISO week (from Monday 00:00 UTC) or the month the call was reserved in.
    ``rolling_*``: the last 24 h, 7 days or 30 days, counted in 1/24 buckets (see
    ``warden.economics._budgets``).
    """

    RUN = "run"
    CALENDAR_DAY = "calendar_day"
    CALENDAR_WEEK = "calendar_week"
    CALENDAR_MONTH = "calendar_month"
    ROLLING_DAY = "rolling_day"
    ROLLING_WEEK = "rolling_week"
    ROLLING_MONTH = "rolling_month"


class PriceOverride(_Model):
    """Prices in USD per million tokens that replace the shipped price data for a model
    (self-hosted models, negotiated prices, models too new for the data)."""

    input_per_mtok: Usd
    output_per_mtok: Usd
    #: cached input read; none: cached input costs what input costs
    cache_read_per_mtok: Usd | None = None
    #: input written to the provider's cache; none: it costs what input costs
    cache_write_per_mtok: Usd | None = None


class ModelCacheSpec(_Model):
    """Exact-match reply cache of a model: a repeat of a cacheable request (temperature 0,
    no tools, not streamed) by the same tenant gets the stored reply, at no cost."""

    ttl: Duration


class ModelSpec(_Model):
    """A model the workflow may call, and how Warden reaches and prices it."""

    #: the API the upstream speaks: OpenAI-compatible (OpenAI, Azure, vLLM, Ollama, ...)
    #: or Anthropic's
    upstream: Literal["openai", "anthropic"]
    #: the upstream's model id (``gpt-4o-mini``, ``claude-sonnet-4-5``)
    model: str = Field(min_length=1, max_length=200)
    #: none: the public endpoint of ``upstream``; ``env:NAME``: read from that environment
    #: variable when the model is first called (one spec, per-environment endpoints)
    base_url: str | None = Field(
        default=None, pattern=r"^(https?://\S+|env:[A-Za-z_][A-Za-z0-9_]*)$"
    )
    #: the genai-prices provider id used for pricing (``openai``, ``azure``, ``google``,
    #: ...); none: the same as ``upstream``
    provider: str | None = Field(default=None, min_length=1, max_length=80)
    #: secret reference (env:NAME or file:NAME) for the upstream's API key; never shown to
    #: the agent or recorded
    credential: str | None = Field(default=None, pattern=r"^(env|file):[A-Za-z0-9_.\-]+$")
    timeout: Duration = timedelta(seconds=60)
    retries: int = Field(2, ge=0, le=10)
    #: tokens of input plus output the model accepts; none: from the price data, if known
    context_window: int | None = Field(default=None, gt=0)
    price: PriceOverride | None = None
    #: the scope an agent needs to call this model (none: any agent of the workflow)
    scope: str | None = None
    #: declared models tried in order when this one's upstream fails with 429, 5xx, a
    #: timeout or an open circuit (the route and why each was skipped are recorded)
    fallback: list[Identifier] = Field(default_factory=list)
    #: a stronger declared model for a structured output that stays invalid after one
    #: retry on this one (``response_format`` with a JSON schema)
    escalate_to: Identifier | None = None
    #: keep replies to cacheable requests for ``ttl`` (per tenant, never across tenants)
    cache: ModelCacheSpec | None = None

    @property
    def pricing_provider(self) -> str:
        """The provider whose prices apply."""
        return self.provider or self.upstream


class RouteRule(_Model):
    """One rule of a route: the first whose ``when`` holds picks the model."""

    #: CEL over ``run``, ``args`` (the request), ``hints`` (what the agent says: e.g.
    #: ``hints.confidence``, ``hints.escalate``), ``tenant`` and ``principal``; none: always
    when: str | None = Field(default=None, min_length=1)
    model: Identifier
    reason: str | None = None


_ON_EXHAUSTED = r"^(deny|require_approval|route:[A-Za-z_][A-Za-z0-9_.\-]*)$"


class BudgetSpec(_Model):
    """A hard cap on spend, in USD and/or tokens, decided in the store before each call."""

    name: Identifier
    scope: BudgetScope
    #: defaults to ``run`` for ``scope: run``; required otherwise
    period: BudgetPeriod
    usd: Annotated[Decimal, Field(gt=0, allow_inf_nan=False)] | None = None
    #: input plus output tokens
    tokens: int | None = Field(default=None, gt=0)
    #: what a call that does not fit gets: ``deny`` (``budget_exceeded`` with what is
    #: left), ``route:<model>`` (the call goes to that cheaper declared model), or
    #: ``require_approval``
    on_exhausted: str = Field(default="deny", pattern=_ON_EXHAUSTED)
    #: fractions of the limit at which an alert goes out once, e.g. ``[0.8]``
    alert_at: list[Annotated[Decimal, Field(gt=0, le=1)]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _run_scope_defaults_to_run_period(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("scope") == "run" and "period" not in data:
            return {**data, "period": "run"}
        return data

    @model_validator(mode="after")
    def _check(self) -> BudgetSpec:
        if self.usd is None and self.tokens is None:
            raise ValueError("a budget needs a limit: give 'usd', 'tokens' or both")
        if self.period is BudgetPeriod.RUN and self.scope is not BudgetScope.RUN:
            raise ValueError(
                f"'period: run' applies only to 'scope: run'; for scope {self.scope.value!r} "
                "give a calendar_* or rolling_* period"
            )
        if list(self.alert_at) != sorted(set(self.alert_at)):
            raise ValueError("'alert_at' lists each fraction once, in increasing order")
        return self

    @property
    def route_model(self) -> str | None:
        """The model named by ``on_exhausted: route:<model>``, if that is the choice."""
        return (
            self.on_exhausted.removeprefix("route:")
            if self.on_exhausted.startswith("route:")
            else None
        )


#: The arguments of a model call as rules see them (``args``): the request in OpenAI's
#: shape, or Anthropic's (``system`` apart). Other parameters pass through untyped.
MODEL_ARGS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["messages"],
    "properties": {
        "messages": {"type": "array", "minItems": 1, "items": {"type": "object"}},
        "system": {"type": ["string", "array"]},
        "max_tokens": {"type": "integer", "minimum": 1},
        "max_completion_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number"},
        "stream": {"type": "boolean"},
        "tools": {"type": "array"},
        "response_format": {"type": "object"},
        #: set when the request is in Anthropic's shape (kept with the arguments, so an
        #: approved call runs later in the shape it was asked in)
        "wire": {"enum": ["openai", "anthropic"]},
    },
    "additionalProperties": True,
}

#: A model ``m`` is called as the tool ``model:m`` (``tool.name`` in rules, kill switches)
MODEL_TOOL_PREFIX = "model:"


__all__ = [
    "MODEL_ARGS_SCHEMA",
    "MODEL_TOOL_PREFIX",
    "BudgetPeriod",
    "BudgetScope",
    "BudgetSpec",
    "ModelCacheSpec",
    "ModelSpec",
    "PriceOverride",
    "RouteRule",
]
