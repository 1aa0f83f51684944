"""The innermost stage: output schema, secrets scrubbed, untrusted output remembered."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from warden.ledger import canonical_json, to_jsonable
from warden.pipeline._call import Call
from warden.pipeline._models import to_nusd
from warden.pipeline.stages._base import Next
from warden.results import Allowed, Failed, FailureKind, Result
from warden.secrets import Redactor
from warden.spec import ToolCostSpec
from warden.tools import SchemaViolation


def _scrub_bytes(value: Any, redactor: Redactor) -> Any:
    """Redact inside bytes before they are base64-encoded for the ledger, where the
    secret would no longer be found."""
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "surrogateescape")
        return redactor.redact_text(text).encode("utf-8", "surrogateescape")
    if isinstance(value, dict):
        return {k: _scrub_bytes(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_bytes(v, redactor) for v in value]
    return value


class VerifyStage:
    async def __call__(self, call: Call, next: Next) -> Result:
        tool = call.tool
        assert tool is not None
        output = call.output
        if call.redactor is not None:
            output = _scrub_bytes(output, call.redactor)
        try:
            result = tool.output.validate(output) if tool.output else to_jsonable(output)
        except SchemaViolation as exc:
            if call.redactor:  # field errors could quote the credential: keep only the text
                detail = call.redactor.redact_text(str(exc))
                return Failed(FailureKind.OUTPUT_SCHEMA_ERROR, detail, call.action_id)
            return Failed(
                FailureKind.OUTPUT_SCHEMA_ERROR, str(exc), call.action_id, tuple(exc.errors)
            )
        if call.redactor:
            result = call.redactor.redact(result)
        if tool.effect.is_write:
            # Checked before the key is settled with it (a read's output is checked by the
            # ledger as it records the outcome: see RecordStage).
            try:
                text = canonical_json(result)
                text.encode("utf-8")
            except (UnicodeEncodeError, TypeError, ValueError) as exc:
                return Failed(
                    FailureKind.OUTPUT_SCHEMA_ERROR,
                    f"the tool's output cannot be recorded: {exc}",
                    call.action_id,
                )
            call.result_json = text
        if tool.cost is not None:
            _charge(call, tool.cost, result)
        call.run.provenance.observe(
            tool.name,
            result,
            untrusted=tool.untrusted_fields or tool.untrusted_output,
            sensitive=tool.sensitive,
            action_id=call.action_id,
        )
        return Allowed(result, call.action_id)


def _charge(call: Call, cost: ToolCostSpec, result: Any) -> None:
    """The call's cost into ``call.cost`` and the run's total; a cost its result does not
    hold is recorded as unknown with the reason (the effect happened: the call stands)."""
    if cost.usd is not None:
        call.cost = cost.usd
    else:
        assert cost.from_result is not None
        value: Any = result
        for part in cost.from_result.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            call.cost_problem = f"the result has no number at {cost.from_result!r}"
            return
        try:
            found = Decimal(str(value))
        except ArithmeticError:
            found = Decimal("NaN")
        if not found.is_finite() or found < 0:
            call.cost_problem = f"{cost.from_result!r} is not a cost in USD: {value!r}"
            return
        call.cost = found
    call.run.cost_nusd += to_nusd(call.cost)
