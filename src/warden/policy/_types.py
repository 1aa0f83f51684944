"""Types for the load-time policy checker (``warden.policy._typecheck``): CEL types as
the checker sees them, read from the context table (``warden.policy._context``), from a
tool function's annotations (its arguments) and from JSON Schemas (an explicit
``input_schema``, and outputs, which reach rules as JSON).

A type is a primitive (``int``, ``string``, ...), ``list<T>``, ``map<K, V>``, a record with
known fields (``ObjT``: a tool's arguments, a context value), a union, or ``dyn`` (not
known; agrees with everything).
"""

from __future__ import annotations

import re
from collections import abc
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin
from typing import Literal as LiteralForm

from warden.policy._context import CONTEXT_TYPES
from warden.policy.cel._values import CelType, UInt
from warden.tools._schema import JsonSchemaValidator, ModelValidator, Validator

# -- types ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prim:
    name: str  # int, uint, double, string, bool, bytes, null, timestamp, duration, type


@dataclass(frozen=True, slots=True)
class ListT:
    elem: Type


@dataclass(frozen=True, slots=True)
class MapT:
    key: Type
    value: Type


@dataclass(frozen=True, slots=True, eq=False)
class ObjT:
    """A record with known fields: a tool's arguments or output, a context value."""

    fields: Mapping[str, Type]
    #: no other field can be present (unknown names are errors)
    closed: bool
    #: how messages name it: "issue_refund's arguments", "run"
    what: str
    required: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Dyn:
    """Not known: agrees with everything."""


@dataclass(frozen=True, slots=True, eq=False)
class UnionT:
    members: tuple[Type, ...]


Type = Prim | ListT | MapT | ObjT | Dyn | UnionT

DYN = Dyn()
INT, UINT, DOUBLE = Prim("int"), Prim("uint"), Prim("double")
STRING, BOOL, BYTES, NULL = Prim("string"), Prim("bool"), Prim("bytes"), Prim("null")
TIMESTAMP, DURATION, TYPE = Prim("timestamp"), Prim("duration"), Prim("type")
_NUMERIC = frozenset({"int", "uint", "double"})
_PRIMS = {p.name: p for p in (INT, UINT, DOUBLE, STRING, BOOL, BYTES, NULL, TIMESTAMP, DURATION)}


def union(types: Iterable[Type]) -> Type:
    """One type for "any of these"; ``dyn`` if any is."""
    flat: list[Type] = []
    for t in types:
        for member in t.members if isinstance(t, UnionT) else (t,):
            if isinstance(member, Dyn):
                return DYN
            if not any(member is m or member == m for m in flat):
                flat.append(member)
    if not flat:
        return DYN
    return flat[0] if len(flat) == 1 else UnionT(tuple(flat))


def members(t: Type) -> tuple[Type, ...]:
    return t.members if isinstance(t, UnionT) else (t,)


def kinds(t: Type) -> frozenset[str] | None:
    """What a value of ``t`` can be at run time: ``number``, ``string``, ``list``, ``map``,
    ... (the numeric types are one kind: CEL compares them with each other); None if
    unknown."""
    out: set[str] = set()
    for m in members(t):
        if isinstance(m, Dyn):
            return None
        if isinstance(m, Prim):
            out.add("number" if m.name in _NUMERIC else m.name)
        elif isinstance(m, ListT):
            out.add("list")
        else:
            out.add("map")
    return frozenset(out)


def describe(t: Type) -> str:
    if isinstance(t, Prim):
        return t.name
    if isinstance(t, ListT):
        return f"list<{describe(t.elem)}>"
    if isinstance(t, MapT):
        return f"map<{describe(t.key)}, {describe(t.value)}>"
    if isinstance(t, ObjT):
        return t.what
    if isinstance(t, UnionT):
        return " | ".join(describe(m) for m in t.members)
    return "dyn"


# -- types from the context table and from JSON Schemas ----------------------------------

_TYPE_TOKEN = re.compile(r"\s*([A-Za-z_]+|[<>,|])")


def parse_type(text: str) -> Type:
    """``list<map<string, int>> | null`` and the like (see ``warden.policy._context``)."""
    tokens = [m[1] for m in _TYPE_TOKEN.finditer(text)]
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise ValueError(f"not a type: {text!r}")
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens) or (expected is not None and tokens[pos] != expected):
            raise ValueError(f"not a type: {text!r}")
        pos += 1
        return tokens[pos - 1]

    def one_of() -> Type:
        options = [single()]
        while pos < len(tokens) and tokens[pos] == "|":
            take("|")
            options.append(single())
        return union(options)

    def single() -> Type:
        name = take()
        if name == "list":
            take("<")
            elem = one_of()
            take(">")
            return ListT(elem)
        if name == "map":
            take("<")
            key = one_of()
            take(",")
            value = one_of()
            take(">")
            return MapT(key, value)
        if name == "dyn":
            return DYN
        if name not in _PRIMS:
            raise ValueError(f"not a type: {text!r} (unknown {name!r})")
        return _PRIMS[name]

    found = one_of()
    if pos != len(tokens):
        raise ValueError(f"not a type: {text!r}")
    return found


def context_types(table: Mapping[str, str] = CONTEXT_TYPES) -> dict[str, Type]:
    """The context roots as types: ``{"tenant": string, "run": {id, step, ...}, ...}``."""
    tree: dict[str, Any] = {}
    for path, text in table.items():
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = parse_type(text)

    def build(name: str, node: dict[str, Any] | Type) -> Type:
        if isinstance(node, dict):
            fields = {k: build(f"{name}.{k}", v) for k, v in node.items()}
            return ObjT(fields, closed=True, what=f"`{name}`", required=frozenset(fields))
        return node

    return {root: build(root, node) for root, node in tree.items()}


CONTEXT = context_types()


@dataclass(frozen=True)
class _SchemaReader:
    """A JSON Schema as a type, for values that reach rules as JSON."""

    root: Mapping[str, Any]
    what: str
    #: an object schema that does not say ``additionalProperties`` has only its properties
    #: (true of what a pydantic model validated or dumped; not of a hand-written schema)
    closed_by_default: bool

    def read(self, schema: Any, what: str | None = None, depth: int = 0) -> Type:
        if not isinstance(schema, Mapping) or depth > 24:
            return DYN
        what = what or self.what
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.read(self._resolve(ref), what, depth + 1)
        if "const" in schema:
            return literal_type(schema["const"])
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return union(literal_type(v) for v in schema["enum"])
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return union(self.read(o, what, depth + 1) for o in options)
        all_of = schema.get("allOf")
        if isinstance(all_of, list):
            return self.read(all_of[0], what, depth + 1) if len(all_of) == 1 else DYN
        kind = schema.get("type")
        if isinstance(kind, list):
            return union(self.read({**schema, "type": k}, what, depth + 1) for k in kind)
        if kind == "string":
            return STRING
        if kind in ("integer", "number", "boolean", "null"):
            return {"integer": INT, "number": DOUBLE, "boolean": BOOL, "null": NULL}[kind]
        if kind == "array":
            items = schema.get("items")
            return ListT(self.read(items, what, depth + 1) if items is not None else DYN)
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema, what, depth)
        return DYN

    def _object(self, schema: Mapping[str, Any], what: str, depth: int) -> Type:
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        if not isinstance(props, Mapping) or (not props and extra is not False):
            return MapT(STRING, self.read(extra, what, depth + 1) if extra else DYN)
        fields = {
            str(name): self.read(sub, f"{what}.{name}", depth + 1) for name, sub in props.items()
        }
        closed = extra is False or (extra is None and self.closed_by_default)
        required = schema.get("required")
        return ObjT(
            fields,
            closed=closed,
            what=what,
            required=frozenset(required) if isinstance(required, list) else frozenset(),
        )

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            return None
        node: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(node, Mapping):
                return None
            node = node.get(part.replace("~1", "/").replace("~0", "~"))
        return node


def literal_type(value: Any) -> Type:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, UInt):
        return UINT
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STRING
    if isinstance(value, bytes):
        return BYTES
    if value is None:
        return NULL
    if isinstance(value, CelType):
        return TYPE
    if isinstance(value, list):
        return ListT(DYN)
    if isinstance(value, dict):
        return MapT(DYN, DYN)
    return DYN


def input_type(name: str, validator: Validator | None) -> Type:
    """A tool's arguments as rules see them."""
    what = f"{name}'s arguments"
    if isinstance(validator, ModelValidator):
        # The values are the Python objects the model made (a datetime, a Decimal), so
        # their types come from the annotations: the JSON Schema cannot tell a Decimal
        # from ``float | str``.
        fields = validator.model.model_fields
        return ObjT(
            {n: python_type(f.annotation) for n, f in fields.items()},
            closed=True,
            what=what,
            required=frozenset(n for n, f in fields.items() if f.is_required()),
        )
    if isinstance(validator, JsonSchemaValidator):
        return _SchemaReader(validator.schema, what, closed_by_default=False).read(validator.schema)
    return DYN


def output_type(name: str, validator: Validator | None) -> Type:
    """A tool's output as a fact: validated, then dumped as JSON."""
    if validator is None:
        return DYN
    closed = not isinstance(validator, JsonSchemaValidator)
    return _SchemaReader(validator.schema, f"{name}'s output", closed).read(validator.schema)


_PYTHON_TYPES: dict[type, Type] = {
    bool: BOOL,
    int: INT,
    float: DOUBLE,
    Decimal: DOUBLE,
    str: STRING,
    bytes: BYTES,
    datetime: TIMESTAMP,
    timedelta: DURATION,
    type(None): NULL,
}


def python_type(annotation: Any, depth: int = 0) -> Type:
    """The CEL type of the values a pydantic field of ``annotation`` holds."""
    if depth > 24 or annotation is None:
        return NULL if annotation is None else DYN
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return python_type(args[0], depth + 1)
    if origin is Union or origin is UnionType:
        return union(python_type(a, depth + 1) for a in args)
    if origin is LiteralForm:
        return union(literal_type(a) for a in args)
    if origin in (list, tuple, abc.Sequence):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return ListT(union(python_type(a, depth + 1) for a in args) if args else DYN)
        return ListT(python_type(args[0], depth + 1) if args else DYN)
    if origin in (dict, abc.Mapping):
        if len(args) == 2:
            return MapT(python_type(args[0], depth + 1), python_type(args[1], depth + 1))
        return MapT(DYN, DYN)
    if annotation in (list, tuple):
        return ListT(DYN)
    if annotation is dict:
        return MapT(DYN, DYN)
    if isinstance(annotation, type):
        if annotation in _PYTHON_TYPES:
            return _PYTHON_TYPES[annotation]
        # IntEnum and StrEnum members are ints and strings to CEL, datetime subclasses
        # timestamps; anything else (date, UUID, a nested model) is not checked.
        for base in (bool, int, str, datetime):
            if issubclass(annotation, base):
                return _PYTHON_TYPES[base]
    return DYN
