"""Validating tool arguments and outputs, with errors an agent can act on.

Two validators behind one interface: a pydantic model built from a function's type hints,
and an explicit JSON Schema from the spec. The JSON Schema path checks with fastjsonschema
(compiled once, ~20x faster than jsonschema on small objects) and only on failure asks
jsonschema for the full, located list of errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import fastjsonschema
import jsonschema
from pydantic import BaseModel, TypeAdapter, ValidationError


@dataclass(frozen=True, slots=True)
class FieldError:
    """One reason a value does not fit its schema."""

    path: str
    expected: str
    got: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {
            "path": self.path,
            "expected": self.expected,
            "got": self.got,
            "message": self.message,
        }


class SchemaViolation(Exception):
    """Raised by validators; carries every ``FieldError`` found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.path}: {e.message}" for e in errors))


class Validator(Protocol):
    schema: dict[str, Any]

    def validate(self, value: Any) -> Any:
        """Return the validated value or raise ``SchemaViolation``."""
        ...


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _dotted(loc: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<root>"


class ModelValidator:
    """Arguments checked by a pydantic model built from the tool function's signature."""

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.schema = model.model_json_schema()
        self._fields = tuple(model.model_fields)

    def validate(self, value: Any) -> dict[str, Any]:
        try:
            obj = self.model.model_validate(value)
        except ValidationError as exc:
            raise SchemaViolation(_pydantic_errors(exc)) from None
        return {name: getattr(obj, name) for name in self._fields}


class AdapterValidator:
    """A tool's output checked against its return annotation."""

    def __init__(self, annotation: Any) -> None:
        self.adapter: TypeAdapter[Any] = TypeAdapter(annotation)
        self.schema = self.adapter.json_schema()

    def validate(self, value: Any) -> Any:
        try:
            checked = self.adapter.validate_python(value)
        except ValidationError as exc:
            raise SchemaViolation(_pydantic_errors(exc)) from None
        return self.adapter.dump_python(checked, mode="json")


def _pydantic_errors(exc: ValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors(include_url=False):
        if err["type"] == "extra_forbidden":
            expected, message = "no such field", "unexpected field"
        elif err["type"] == "missing":
            expected, message = "a value", "required field is missing"
        else:
            expected = err["msg"].removeprefix("Input should be ")
            message = err["msg"]
        got = "nothing" if err["type"] == "missing" else _got(err.get("input"))
        out.append(FieldError(_dotted(err["loc"]), expected, got, message))
    return out


class JsonSchemaValidator:
    """Values checked against an explicit JSON Schema (draft 2020-12)."""

    def __init__(self, schema: dict[str, Any]) -> None:
        jsonschema.Draft202012Validator.check_schema(schema)
        self.schema = schema
        self._fast: Callable[[Any], Any] = fastjsonschema.compile(schema)
        self._full = jsonschema.Draft202012Validator(schema)

    def validate(self, value: Any) -> Any:
        try:
            self._fast(value)
        except fastjsonschema.JsonSchemaException:
            errors = sorted(self._full.iter_errors(value), key=lambda e: list(e.absolute_path))
            raise SchemaViolation(
                [
                    FieldError(
                        _dotted(list(e.absolute_path)),
                        _expected(e),
                        _got(e.instance),
                        e.message,
                    )
                    for e in errors
                ]
                or [FieldError("<root>", "a valid value", _got(value), "does not match the schema")]
            ) from None
        return value


def _expected(error: jsonschema.ValidationError) -> str:
    validator = str(error.validator)
    if validator in {"type", "enum", "const", "minimum", "maximum", "pattern", "format"}:
        return f"{validator} {error.validator_value!r}"
    if validator == "required":
        return "required fields present"
    if validator == "additionalProperties":
        return "no additional properties"
    return validator
