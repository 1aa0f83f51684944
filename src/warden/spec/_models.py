"""The workflow spec as typed models: what a YAML file may say, and nothing else.

Every model forbids unknown keys, so a misspelt key is an error with its line, not a
setting silently ignored.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

# The shared building blocks live in _base (the economics models use them too).
from warden.spec._alerts import AlertSpec
from warden.spec._base import Duration, FieldPath, Identifier, _Model
from warden.spec._base import _parse_duration as _parse_duration  # used by the CLI
from warden.spec._economics import (
    MODEL_ARGS_SCHEMA,
    MODEL_TOOL_PREFIX,
    BudgetSpec,
    ModelSpec,
    RouteRule,
)
from warden.spec._economics import PriceOverride as PriceOverride


class Tier(StrEnum):
    READ_ONLY = "read_only"
    DRAFT = "draft"
    APPROVE = "approve"
    AUTONOMOUS = "autonomous"


class EffectClass(StrEnum):
    """What a tool does to the world; drives the safe defaults."""

    READ = "read"
    WRITE = "write"
    DELETE = "delete"
    MONEY = "money"
    EXTERNAL_MESSAGE = "external_message"
    IDENTITY = "identity"
    PRODUCTION = "production"

    @property
    def is_write(self) -> bool:
        return self is not EffectClass.READ


class Effect(StrEnum):
    """A policy decision, in increasing order of restriction."""

    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    ESCALATE = "escalate"
    DENY = "deny"

    @property
    def rank(self) -> int:
        return _EFFECT_RANK[self]


_EFFECT_RANK = {
    Effect.ALLOW: 0,
    Effect.REQUIRE_APPROVAL: 1,
    Effect.ESCALATE: 2,
    Effect.DENY: 3,
}


class RuleEffect(StrEnum):
    """What a rule may say: an ``Effect``, or ``score`` (add risk, decide nothing)."""

    ALLOW = "allow"
    REQUIRE_APPROVAL = "require_approval"
    ESCALATE = "escalate"
    DENY = "deny"
    SCORE = "score"


class RetrySpec(_Model):
    max_attempts: int = Field(1, ge=1, le=20)
    backoff: Duration = timedelta(milliseconds=100)
    max_backoff: Duration = timedelta(seconds=5)


class CircuitSpec(_Model):
    failure_threshold: int = Field(5, ge=1)
    reset_after: Duration = timedelta(seconds=30)


class ToolCostSpec(_Model):
    """What one call of a tool costs: a fixed price, or a number its result carries."""

    #: USD per call
    usd: Annotated[Decimal, Field(ge=0, allow_inf_nan=False)] | None = None
    #: a dotted path into the tool's result holding the call's USD cost (``billing.usd``)
    from_result: FieldPath | None = None

    @model_validator(mode="after")
    def _one(self) -> ToolCostSpec:
        if (self.usd is None) == (self.from_result is None):
            raise ValueError("give the cost's 'usd' or its 'from_result', one of the two")
        return self


class ToolSpec(_Model):
    """Governance attributes of a tool; fields left out keep the implementation's values."""

    description: str | None = None
    effect: EffectClass | None = None
    idempotent: bool | None = None
    timeout: Duration | None = None
    retry: RetrySpec | None = None
    circuit: CircuitSpec | None = None
    #: true: the output is content someone else wrote (tickets, emails, web pages); or the
    #: output fields that are (dotted paths without list indices, e.g. ``[subject, body]``)
    untrusted_output: bool | Annotated[list[FieldPath], Field(min_length=1)] | None = None
    #: the output is a private record: its values in later arguments are listed in
    #: ``provenance.sensitive_args``
    sensitive: bool | None = None
    scope: str | None = None
    #: secret reference (env:NAME, file:NAME, hmac:NAME) minted per call for the tool's
    #: ``Secret``-typed parameter; never shown to the agent or recorded
    credential: str | None = Field(default=None, pattern=r"^(env|file|hmac):[A-Za-z0-9_.\-]+$")
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    #: CEL over ``args`` naming the resource a call acts on (e.g. ``args.order_id``): calls
    #: on one resource hold a store lock from their fact lookups through their effect
    serialize_on: str | None = Field(default=None, min_length=1)
    #: what a call costs (added to the run's ``cost_usd`` and recorded with its result)
    cost: ToolCostSpec | None = None
    #: ``schema: any`` declares on purpose that some parameters have no type: their values
    #: are passed unchecked. Without it, a tool whose parameters lack types and that has no
    #: ``input_schema`` does not load. (Named ``schema`` in YAML; the attribute name avoids
    #: shadowing ``BaseModel.schema``.)
    any_schema: Literal["any"] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _one_way_to_describe_input(self) -> ToolSpec:
        if self.any_schema is not None and self.input_schema is not None:
            raise ValueError("give either 'schema: any' or an 'input_schema', not both")
        return self


class TaskType(_Model):
    name: Identifier
    description: str | None = None
    #: what success means, for people (prose; never evaluated)
    success: str
    #: the success check: CEL over what the run recorded (``run``, ``actions``), evaluated
    #: when the run finishes; its verdict, not the outcome the agent reports, then decides
    #: whether the run succeeded (docs/policies.md, "Task types")
    success_when: str | None = Field(default=None, min_length=1)
    allowed_tools: list[str] = Field(default_factory=list)
    refuse_when: list[str] = Field(default_factory=list)


class Rule(_Model):
    name: Identifier
    when: str = Field(min_length=1)
    #: ``score`` adds the rule's ``risk`` without deciding anything
    effect: RuleEffect
    reason: str = Field(min_length=1)
    approvers: str | None = None
    #: An SLA class from ``escalation.sla_classes``: how soon the approval is due.
    sla: Identifier | None = None
    risk: float = Field(0.0, ge=0.0, le=1.0)
    tools: list[str] | None = None
    #: ``shadow``: evaluated and recorded as what it would have decided, never enforced
    mode: Literal["enforce", "shadow"] = "enforce"

    @model_validator(mode="after")
    def _score_needs_risk(self) -> Rule:
        if self.effect is RuleEffect.SCORE and self.risk <= 0.0:
            raise ValueError("a rule with 'effect: score' needs a 'risk' above 0")
        return self


class FactSpec(_Model):
    """A read-only lookup the gateway runs before deciding (``facts.<name>`` in rules)."""

    tool: str
    args: dict[str, str] = Field(
        description="argument name -> CEL expression over the action (and other facts)"
    )


class WindowSpec(_Model):
    """An aggregate over the tenant's recorded actions (``window.<name>`` in rules)."""

    #: the tool whose actions the window aggregates; or ``tools``, several of them
    tool: str | None = None
    tools: Annotated[list[str], Field(min_length=1)] | None = None
    aggregate: Literal["count", "sum", "count_distinct", "max"] = "count"
    #: CEL over the action (``args.amount``); a bare argument name means ``args.<name>``
    field: str | None = Field(default=None, min_length=1)
    #: CEL over the action and facts (``args.customer_id``, ``facts.order.customer_id``);
    #: a bare argument name means ``args.<name>``; none: one group for the tenant
    group_by: str | None = Field(default=None, min_length=1)
    period: Duration

    @model_validator(mode="after")
    def _check(self) -> WindowSpec:
        if (self.tool is None) == (self.tools is None):
            raise ValueError("give the window's 'tool' or its 'tools', one of the two")
        if self.aggregate != "count" and not self.field:
            raise ValueError(
                f"aggregate {self.aggregate!r} needs 'field' (the expression it aggregates)"
            )
        return self

    @property
    def tool_names(self) -> tuple[str, ...]:
        """Every tool whose actions the window aggregates."""
        return (self.tool,) if self.tool is not None else tuple(self.tools or ())


class RiskSpec(_Model):
    """How risk (summed over matching rules, ``effect: score`` included) decides review."""

    #: a call whose risk is at or above this goes to a human (``require_approval``) unless
    #: a rule denies or escalates it; below it the tier and the rules decide
    review_at: float | None = Field(None, gt=0.0, le=1.0)


class Limits(_Model):
    max_steps: int = Field(100, ge=1)
    max_retries_per_tool: int = Field(3, ge=0)
    max_identical_calls: int = Field(3, ge=2)


class Escalation(_Model):
    def sla_for(self, sla_class: str | None) -> timedelta:
        """The time an approval of ``sla_class`` has at each level: the default SLA when
        the class is None or no longer declared (a pending approval outlives a spec edit)."""
        return self.sla_classes.get(sla_class, self.sla) if sla_class else self.sla

    approver_roles: list[str] = Field(default_factory=lambda: ["approver"], min_length=1)
    #: How long each approver role in the chain has, unless a rule names an SLA class.
    sla: Duration = timedelta(hours=24)
    #: Named SLAs a rule can pick with ``sla:`` (e.g. ``{urgent: 5m, standard: 24h}``).
    sla_classes: dict[Identifier, Duration] = Field(default_factory=dict)
    on_timeout: Literal["deny", "escalate"] = "deny"
    #: An agent (or a user steering it) cannot flood the queue: past these, requests are denied.
    max_requests_per_run: int = Field(10, ge=1)
    max_requests_per_end_user_per_day: int = Field(50, ge=1)


class SLO(_Model):
    """Targets measured by ``warden slo`` (docs/slo-alerts.md): the least success rate,
    the most latency, escalation and policy-violation rates, and cost per successful task."""

    success_rate: float | None = Field(None, ge=0, le=1)
    p50_latency_ms: float | None = Field(None, gt=0)
    p95_latency_ms: float | None = Field(None, gt=0)
    escalation_rate_max: float | None = Field(None, ge=0, le=1)
    policy_violation_rate_max: float | None = Field(None, ge=0, le=1)
    cost_per_task_usd: float | None = Field(None, ge=0)


class ROI(_Model):
    """Baseline figures for the console's ROI panel (docs/console.md, "Dashboards"): what
    the work costs when people do it. Every figure is the operator's estimate; nothing is
    measured from them."""

    #: minutes a person spends on one task the agent resolves (a successful run)
    human_minutes_per_task: Annotated[Decimal, Field(gt=0, le=100_000, allow_inf_nan=False)]
    #: what an hour of that person's time costs, USD (salary and overhead)
    human_cost_per_hour_usd: Annotated[Decimal, Field(ge=0, le=1_000_000, allow_inf_nan=False)]
    #: minutes a person spends on one escalation (an approval the agent asked for)
    escalation_minutes: Annotated[Decimal, Field(ge=0, le=100_000, allow_inf_nan=False)] = (
        Decimal(0)
    )


PiiKindName = Literal["email", "phone", "card", "iban", "ssn", "ipv4", "ipv6", "credential"]
PII_KINDS: tuple[PiiKindName, ...] = (
    "email",
    "phone",
    "card",
    "iban",
    "ssn",
    "ipv4",
    "ipv6",
    "credential",
)
_PII_PATH = r"^(args|result|facts|evidence|\*)(\.([A-Za-z0-9_-]+|\*))+$"


class PiiSpec(_Model):
    """PII redaction (docs/pii.md): what is tokenized before anything is stored or sent."""

    enabled: bool = True
    #: the detectors that run on every string (all of them by default)
    detect: list[PiiKindName] = Field(default_factory=lambda: list(PII_KINDS))
    #: fields tokenized whole, whatever they hold: paths in an event (``args.to``,
    #: ``result.customer.email``, ``facts.order_customer.email``; ``*`` for any key; a
    #: list's items sit at the list's path)
    redact: list[Annotated[str, Field(pattern=_PII_PATH)]] = Field(default_factory=list)
    #: keep each token's raw value sealed in the vault, for approvers and auditors
    vault: bool = False


class Gates(_Model):
    """Release gates of ``warden eval run`` (docs/evals.md): what a suite's results must
    meet, alone and against a stored baseline. Unset thresholds come from ``slo:``."""

    #: the least share of gating cases that must pass (default: ``slo.success_rate``)
    success_rate: float | None = Field(None, ge=0, le=1)
    #: the most the success rate may fall below the baseline's, in percentage points
    max_success_drop_points: float = Field(2.0, ge=0, le=100)
    #: how many more unsafe-write attempts than the baseline are tolerated
    max_unsafe_write_increase: float = Field(0.0, ge=0)
    #: the most cost per successful case may grow over the baseline's (0.2: 20 %)
    max_cost_per_success_increase: float = Field(0.2, ge=0)
    #: the slowest a case's p95 latency may be (default: ``slo.p95_latency_ms``)
    p95_latency_ms: float | None = Field(None, gt=0)


class AgentSpec(_Model):
    scopes: list[str] = Field(default_factory=list)
    description: str | None = None


class WorkflowSpec(_Model):
    name: Identifier
    version: str
    description: str = ""
    owner: str
    tier: Tier = Tier.APPROVE
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    task_types: list[TaskType] = Field(default_factory=list)
    tools: dict[str, ToolSpec] = Field(default_factory=dict)
    facts: dict[str, FactSpec] = Field(default_factory=dict)
    windows: dict[str, WindowSpec] = Field(default_factory=dict)
    #: named CEL expressions shared by rules (``variables.<name>``), evaluated lazily,
    #: once per decision
    variables: dict[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], str] = Field(
        default_factory=dict
    )
    policies: list[Rule] = Field(default_factory=list)
    risk: RiskSpec = Field(default_factory=lambda: RiskSpec())
    limits: Limits = Field(default_factory=lambda: Limits())
    escalation: Escalation = Field(default_factory=lambda: Escalation())
    slo: SLO = Field(default_factory=lambda: SLO())
    #: baseline figures for the console's ROI panel; None: the panel says how to add them
    roi: ROI | None = None
    #: release gates for ``warden eval run`` (thresholds and baseline comparisons)
    gates: Gates = Field(default_factory=lambda: Gates())
    #: models the workflow calls, by the name agents use (``run.chat("small", ...)``)
    models: dict[Identifier, ModelSpec] = Field(default_factory=dict)
    #: a route is a name an agent asks for in place of a model (``run.chat("auto", ...)``):
    #: its first rule whose ``when`` holds picks the declared model
    routes: dict[Identifier, Annotated[list[RouteRule], Field(min_length=1)]] = Field(
        default_factory=dict
    )
    budgets: list[BudgetSpec] = Field(default_factory=list)
    pii: PiiSpec = Field(default_factory=lambda: PiiSpec())
    #: built-in alerts (warden.telemetry; docs/slo-alerts.md)
    alerts: list[AlertSpec] = Field(default_factory=list)

    @model_validator(mode="after")
    def _alert_names_unique(self) -> WorkflowSpec:
        names = [a.key for a in self.alerts]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"alerts: {', '.join(twice)} named twice (give each a name:)")
        return self

    @model_validator(mode="after")
    def _models_are_tools(self) -> WorkflowSpec:
        """Each model ``m`` is also the tool ``model:m``: a model call passes the same
        stages as a tool call (switches, caps, identity, schema, policy, approval), and
        rules, windows and switches name it like a tool."""
        if not self.models:
            return self
        tools = dict(self.tools)
        for name, model in self.models.items():
            key = MODEL_TOOL_PREFIX + name
            if key in tools:
                raise ValueError(f"tool name {key!r} is taken by the model {name!r}")
            tools[key] = ToolSpec(
                description=f"a call of the model {name!r} ({model.upstream}: {model.model})",
                effect=EffectClass.READ,
                idempotent=True,
                scope=model.scope,
                timeout=model.timeout,
                input_schema=MODEL_ARGS_SCHEMA,
            )
        object.__setattr__(self, "tools", tools)
        return self

