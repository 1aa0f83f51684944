"""Strict argument validation: no lossy coercion, and no tool without a schema by accident."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pytest
from conftest import Effects

from warden import Allowed, Failed, FailureKind, Gateway, tool
from warden.errors import SpecError
from warden.spec import load_spec_text


@pytest.mark.parametrize(
    ("amount", "got"),
    [
        (True, "True"),
        ("65.39", "'65.39'"),
        (None, "None"),
        ([65.39], "[65.39]"),
        # NaN compares false with everything, so it would slip past "amount > 100".
        (float("nan"), "nan"),
        (float("inf"), "inf"),
    ],
)
async def test_pay_with_a_non_number_amount_is_a_schema_error_and_pays_nothing(
    gateway: Gateway, effects: Effects, amount: Any, got: str
) -> None:
    async with gateway.run(tenant="t", agent="bot", task="lax amount") as run:
        result = await run.call(
            "pay", {"order_id": "o1", "customer_id": "c1", "amount": amount}
        )
    assert isinstance(result, Failed)
    assert result.kind is FailureKind.SCHEMA_ERROR
    assert [(e.path, e.got) for e in result.errors] == [("amount", got)]
    assert "number" in result.errors[0].expected
    assert effects.paid == []


async def test_pay_with_a_number_amount_still_pays(gateway: Gateway, effects: Effects) -> None:
    async with gateway.run(tenant="t", agent="bot", task="ok amount") as run:
        as_int = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 5})
        as_float = await run.call("pay", {"order_id": "o1", "customer_id": "c1", "amount": 65.39})
    assert isinstance(as_int, Allowed) and isinstance(as_float, Allowed)
    assert effects.paid == [
        {"order_id": "o1", "amount": 5.0},
        {"order_id": "o1", "amount": 65.39},
    ]


@pytest.mark.parametrize("value", [1.5, 2.0, True, "2"])
async def test_an_int_parameter_takes_only_an_int(
    gateway: Gateway, effects: Effects, value: Any
) -> None:
    async with gateway.run(tenant="t", agent="bot", task="lax int") as run:
        result = await run.call("save", {"key": "k", "value": value})
    assert isinstance(result, Failed) and result.kind is FailureKind.SCHEMA_ERROR
    assert [e.path for e in result.errors] == ["value"]
    assert effects.saved == []


@pytest.mark.parametrize("value", [0, "yes", 1.0])
def test_a_bool_parameter_takes_only_a_bool(store_url: str, value: Any) -> None:
    @tool(effect="read")
    def flag(on: bool) -> dict[str, bool]:
        return {"on": on}

    spec = load_spec_text(_SPEC.format(tools="  flag: {}"), "flags.yaml")
    with Gateway(spec, [flag], store=store_url).sync() as gw, gw.run(
        tenant="t", agent="bot", task="flag"
    ) as run:
        bad = run.call("flag", {"on": value})
        good = run.call("flag", {"on": False})
    assert isinstance(bad, Failed) and bad.kind is FailureKind.SCHEMA_ERROR
    assert [e.path for e in bad.errors] == ["on"]
    assert isinstance(good, Allowed) and good.result == {"on": False}


class Priority(StrEnum):
    LOW = "low"
    HIGH = "high"


def test_values_json_carries_as_strings_still_validate(store_url: str) -> None:
    """Dates, enums and decimals arrive as JSON strings; taking them is not a coercion."""
    seen: list[tuple[datetime, Priority, Decimal]] = []

    @tool(effect="read")
    def plan(at: datetime, priority: Priority, budget: Decimal) -> dict[str, str]:
        seen.append((at, priority, budget))
        return {"ok": "yes"}

    spec = load_spec_text(_SPEC.format(tools="  plan: {}"), "plan.yaml")
    with Gateway(spec, [plan], store=store_url).sync() as gw, gw.run(
        tenant="t", agent="bot", task="plan"
    ) as run:
        ok = run.call(
            "plan", {"at": "2024-05-01T12:00:00Z", "priority": "high", "budget": "65.39"}
        )
        bad = run.call("plan", {"at": "2024-05-01T12:00:00Z", "priority": "urgent", "budget": 1})
    assert isinstance(ok, Allowed)
    assert seen[0][1] is Priority.HIGH and seen[0][2] == Decimal("65.39")
    assert seen[0][0].year == 2024
    assert isinstance(bad, Failed) and [e.path for e in bad.errors] == ["priority"]


def test_a_spec_json_schema_rejects_bool_string_and_non_finite_numbers(store_url: str) -> None:
    paid: list[Any] = []

    def transfer(**kwargs: Any) -> dict[str, Any]:
        paid.append(kwargs)
        return {"ok": True}

    schema = (
        "  transfer:\n"
        "    effect: money\n"
        "    input_schema:\n"
        "      type: object\n"
        "      properties: {amount: {type: number}}\n"
        "      required: [amount]\n"
        "      additionalProperties: false\n"
    )
    spec = load_spec_text(_SPEC.format(tools=schema), "transfer.yaml")
    with Gateway(spec, {"transfer": transfer}, store=store_url).sync() as gw, gw.run(
        tenant="t", agent="bot", task="transfer"
    ) as run:
        results = [
            run.call("transfer", {"amount": a}) for a in (True, "65.39", float("nan"), float("-inf"))
        ]
    for result in results:
        assert isinstance(result, Failed) and result.kind is FailureKind.SCHEMA_ERROR
        assert [e.path for e in result.errors] == ["amount"]
    assert paid == []


_SPEC = """
name: strict
version: "1"
owner: tests@example.com
tier: autonomous
agents:
  bot: {{scopes: []}}
tools:
{tools}
"""


def _untyped(order_id, amount):  # type: ignore[no-untyped-def]
    return {"order_id": order_id, "amount": amount}


def test_a_tool_without_types_or_schema_is_a_load_error(store_url: str) -> None:
    spec = load_spec_text(_SPEC.format(tools="  refund: {effect: money}"), "untyped.yaml")
    with pytest.raises(SpecError) as raised:
        Gateway(spec, {"refund": _untyped}, store=store_url)
    message = str(raised.value)
    assert "refund" in message
    assert "amount" in message and "order_id" in message
    assert "schema: any" in message
    assert "untyped.yaml" in message


def test_a_partly_typed_tool_is_a_load_error(store_url: str) -> None:
    @tool(effect="money")
    def refund(order_id: str, amount) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        return {"order_id": order_id, "amount": amount}

    spec = load_spec_text(_SPEC.format(tools="  refund: {effect: money}"), "partly.yaml")
    with pytest.raises(SpecError) as raised:
        Gateway(spec, [refund], store=store_url)
    assert "'refund'" in str(raised.value) and "amount" in str(raised.value)


def test_schema_any_declares_an_untyped_tool_on_purpose(store_url: str) -> None:
    spec = load_spec_text(
        _SPEC.format(tools="  refund: {effect: read, schema: any}"), "any.yaml"
    )
    with Gateway(spec, {"refund": _untyped}, store=store_url).sync() as gw, gw.run(
        tenant="t", agent="bot", task="any"
    ) as run:
        anything = run.call("refund", {"order_id": 7, "amount": "a lot"})
        unknown = run.call("refund", {"order_id": 7, "amount": 1, "to": "x"})
    assert isinstance(anything, Allowed)
    assert anything.result == {"order_id": 7, "amount": "a lot"}
    # ``any`` is about values: the parameter names still have to match.
    assert isinstance(unknown, Failed) and [e.path for e in unknown.errors] == ["to"]


def test_an_explicit_input_schema_makes_an_untyped_tool_loadable(store_url: str) -> None:
    tools = (
        "  refund:\n"
        "    effect: read\n"
        "    input_schema: {type: object, properties: {order_id: {type: string}, "
        "amount: {type: number}}, required: [order_id, amount], additionalProperties: false}\n"
    )
    spec = load_spec_text(_SPEC.format(tools=tools), "schema.yaml")
    with Gateway(spec, {"refund": _untyped}, store=store_url).sync() as gw, gw.run(
        tenant="t", agent="bot", task="schema"
    ) as run:
        result = run.call("refund", {"order_id": "o1", "amount": 2.5})
    assert isinstance(result, Allowed) and result.result == {"order_id": "o1", "amount": 2.5}


def test_schema_any_with_an_input_schema_is_a_contradiction() -> None:
    tools = "  refund: {effect: read, schema: any, input_schema: {type: object}}"
    with pytest.raises(SpecError) as raised:
        load_spec_text(_SPEC.format(tools=tools), "both.yaml")
    assert "schema" in str(raised.value) and "input_schema" in str(raised.value)


def test_schema_accepts_only_any() -> None:
    with pytest.raises(SpecError) as raised:
        load_spec_text(_SPEC.format(tools="  refund: {effect: read, schema: loose}"), "x.yaml")
    assert "any" in str(raised.value)
