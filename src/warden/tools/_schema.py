"""Validating tool arguments and outputs, with errors an agent can act on.

Two validators behind one interface: a pydantic model built from a function's type hints,
and an explicit JSON Schema from the spec. Neither coerces lossily: ``true`` is not a number,
``"65.39"`` is not a float, ``2.5`` is not an int, and NaN or infinity is no argument. The
JSON Schema path checks with fastjsonschema (compiled once, ~20x faster than jsonschema on
small objects) and only on failure asks jsonschema for the full, located list of errors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import fastjsonschema
import jsonschema
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_json


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
    """Arguments checked by a pydantic model built from the tool function's signature.

    Validation is strict: pydantic's lax mode would pay ``amount: true`` as 1.0. Strict mode
    on Python objects, though, also refuses what JSON can only carry as a string (a datetime,
    an enum value, a decimal, a UUID), so a value the fast strict check refuses is checked
    again in its JSON form, where strict mode takes exactly those strings and nothing lossy.
    """

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.schema = model.model_json_schema()
        self._fields = tuple(model.model_fields)

    def validate(self, value: Any) -> dict[str, Any]:
        try:
            obj = self.model.model_validate(value, strict=True)
        except ValidationError as exc:
            obj = self._validate_as_json(value, exc)
        return {name: getattr(obj, name) for name in self._fields}

    def _validate_as_json(self, value: Any, first: ValidationError) -> BaseModel:
        try:
            as_json = to_json(value)
        except (PydanticSerializationError, ValueError):
            # Not representable as JSON (a lone surrogate, an arbitrary object): the errors
            # of the Python check are the ones to show.
            raise SchemaViolation(_pydantic_errors(first)) from None
        try:
            return self.model.model_validate_json(as_json, strict=True)
        except ValidationError as exc:
            raise SchemaViolation(_pydantic_errors(exc)) from None


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
    """Values checked against an explicit JSON Schema (draft 2020-12).

    With ``finite_numbers`` (arguments), NaN and infinity are refused wherever they appear:
    JSON Schema's ``number`` admits them, and NaN compares false with every bound a policy
    sets (``amount > 100``).
    """

    def __init__(self, schema: dict[str, Any], *, finite_numbers: bool = False) -> None:
        jsonschema.Draft202012Validator.check_schema(schema)
        self.schema = schema
        self._fast: Callable[[Any], Any] = fastjsonschema.compile(schema)
        self._full = jsonschema.Draft202012Validator(schema)
        self._finite = finite_numbers

    def validate(self, value: Any) -> Any:
        if self._finite:
            non_finite = list(_non_finite(value, ()))
            if non_finite:
                raise SchemaViolation(
                    [
                        FieldError(
                            _dotted(path), "a finite number", _got(bad), "NaN and infinity are not numbers"
                        )
                        for path, bad in non_finite
                    ]
                )
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


def _non_finite(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], float]]:
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, (*path, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _non_finite(item, (*path, index))


def _expected(error: jsonschema.ValidationError) -> str:
    validator = str(error.validator)
    if validator in {"type", "enum", "const", "minimum", "maximum", "pattern", "format"}:
        return f"{validator} {error.validator_value!r}"
    if validator == "required":
        return "required fields present"
    if validator == "additionalProperties":
        return "no additional properties"
    return validator
