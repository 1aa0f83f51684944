"""Tools: typed Python functions registered with a decorator, or declared in the spec.

A ``ToolDef`` is everything the gateway knows about a tool: how to validate its input and
output, what it does to the world, and how to execute it safely.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal, TypeVar, get_type_hints, overload

from pydantic import ConfigDict, create_model

from warden.errors import SpecError, SpecIssue, UsageError
from warden.secrets import Secret
from warden.spec import (
    MODEL_TOOL_PREFIX,
    CircuitSpec,
    EffectClass,
    LoadedSpec,
    RetrySpec,
    ToolCostSpec,
    ToolSpec,
)
from warden.tools._schema import AdapterValidator, JsonSchemaValidator, ModelValidator, Validator

F = TypeVar("F", bound=Callable[..., Any])

_ATTR = "__warden_tool__"


@dataclass(frozen=True)
class ToolDef:
    name: str
    fn: Callable[..., Any] | None
    effect: EffectClass
    idempotent: bool
    timeout_s: float
    retry: RetrySpec
    circuit: CircuitSpec
    untrusted_output: bool
    scope: str | None
    description: str
    input: Validator | None
    output: Validator | None
    #: the parameter that receives a per-call ``Secret`` (not part of the input schema)
    credential_param: str | None = None
    #: the secret reference minted for it (from the spec's ``credential``)
    credential: str | None = None
    #: parameters without a type annotation (``**name`` for a catch-all): such a tool loads
    #: only with an explicit ``input_schema`` or ``schema: any`` in the spec
    untyped_params: tuple[str, ...] = ()
    #: when ``untrusted_output``: only these output fields are untrusted (empty: all)
    untrusted_fields: tuple[str, ...] = ()
    #: the output is a private record (``provenance.sensitive_args``)
    sensitive: bool = False
    #: ``model``: a call of a declared model (``model:<name>``), run by the pipeline's
    #: model stages rather than a Python function
    kind: Literal["tool", "model"] = "tool"
    #: what a call costs (``ToolSpec.cost``): fixed, or read from the result
    cost: ToolCostSpec | None = None

    def __post_init__(self) -> None:
        # Looked up once: inspect.iscoroutinefunction costs ~5 us per call on the hot path.
        object.__setattr__(self, "is_async", self.fn is not None and inspect.iscoroutinefunction(self.fn))

    is_async: bool = field(init=False, default=False)

    def with_spec(self, spec: ToolSpec) -> ToolDef:
        """Spec attributes override the implementation's; unset ones are kept."""
        changes: dict[str, Any] = {}
        for attr, target in (
            ("effect", "effect"),
            ("idempotent", "idempotent"),
            ("sensitive", "sensitive"),
            ("scope", "scope"),
            ("description", "description"),
            ("retry", "retry"),
            ("circuit", "circuit"),
            ("cost", "cost"),
        ):
            value = getattr(spec, attr)
            if value is not None:
                changes[target] = value
        if isinstance(spec.untrusted_output, list):
            changes["untrusted_output"] = True
            changes["untrusted_fields"] = tuple(spec.untrusted_output)
        elif spec.untrusted_output is not None:
            changes["untrusted_output"] = spec.untrusted_output
            changes["untrusted_fields"] = ()
        if spec.credential is not None:
            changes["credential"] = spec.credential
        if spec.timeout is not None:
            changes["timeout_s"] = spec.timeout.total_seconds()
        if spec.input_schema is not None:
            changes["input"] = JsonSchemaValidator(spec.input_schema, finite_numbers=True)
        if spec.output_schema is not None:
            changes["output"] = JsonSchemaValidator(spec.output_schema)
        if spec.effect is not None and spec.idempotent is None and "idempotent" not in changes:
            changes["idempotent"] = spec.effect is EffectClass.READ
        return replace(self, **changes)

    def bind(self, fn: Callable[..., Any]) -> ToolDef:
        return replace(self, fn=fn)


def _credential_param(fn: Callable[..., Any]) -> str | None:
    hints = get_type_hints(fn)
    found = [name for name, hint in hints.items() if hint is Secret and name != "return"]
    return found[0] if found else None


def _input_model(fn: Callable[..., Any], name: str) -> tuple[ModelValidator | None, tuple[str, ...]]:
    """The argument model from the signature, and the parameters it cannot type."""
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    untyped: list[str] = []
    catch_all = False
    credential = _credential_param(fn)
    for param in inspect.signature(fn).parameters.values():
        if param.name == credential:
            continue  # supplied by the gateway at execution, never by the agent
        if param.kind is param.VAR_POSITIONAL:
            raise UsageError(f"tool {name!r}: *{param.name} cannot receive named arguments")
        if param.kind is param.VAR_KEYWORD:
            # No model describes "any other name"; only a spec input_schema (or ``schema:
            # any``) can say what it accepts.
            untyped.append(f"**{param.name}")
            catch_all = True
            continue
        if param.name not in hints:
            untyped.append(param.name)
        annotation = hints.get(param.name, Any)
        default = ... if param.default is param.empty else param.default
        fields[param.name] = (annotation, default)
    if catch_all:
        return None, tuple(untyped)
    model = create_model(
        f"{name}_args",
        # Non-finite numbers compare false with everything: NaN would pass "amount > 100".
        __config__=ConfigDict(extra="forbid", strict=True, allow_inf_nan=False),
        **fields,
    )
    return ModelValidator(model), tuple(untyped)


def _output_validator(fn: Callable[..., Any]) -> AdapterValidator | None:
    hints = get_type_hints(fn, include_extras=True)
    annotation = hints.get("return", Any)
    if annotation is Any or annotation is type(None):
        return None
    return AdapterValidator(annotation)


def make_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    effect: EffectClass | str = EffectClass.READ,
    idempotent: bool | None = None,
    timeout: float | timedelta = 30.0,
    retry: RetrySpec | None = None,
    circuit: CircuitSpec | None = None,
    untrusted_output: bool = False,
    scope: str | None = None,
    description: str | None = None,
) -> ToolDef:
    tool_name = name or fn.__name__
    effect_class = EffectClass(effect)
    input_validator, untyped = _input_model(fn, tool_name)
    return ToolDef(
        name=tool_name,
        fn=fn,
        effect=effect_class,
        idempotent=(effect_class is EffectClass.READ) if idempotent is None else idempotent,
        timeout_s=timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout),
        retry=retry or RetrySpec.model_validate({}),
        circuit=circuit or CircuitSpec.model_validate({}),
        untrusted_output=untrusted_output,
        scope=scope,
        description=description or inspect.getdoc(fn) or "",
        input=input_validator,
        output=_output_validator(fn),
        credential_param=_credential_param(fn),
        untyped_params=untyped,
    )


@overload
def tool(fn: F, /) -> F: ...
@overload
def tool(
    *,
    name: str | None = None,
    effect: EffectClass | str = EffectClass.READ,
    idempotent: bool | None = None,
    timeout: float | timedelta = 30.0,
    retry: RetrySpec | None = None,
    circuit: CircuitSpec | None = None,
    untrusted_output: bool = False,
    scope: str | None = None,
    description: str | None = None,
) -> Callable[[F], F]: ...
def tool(fn: Any = None, /, **options: Any) -> Any:
    """Register a typed function as a tool: input schema from its parameters' type hints,
    output schema from its return annotation. The function stays callable as before.

    ``effect`` is the side-effect class (read, write, delete, money, external_message,
    identity, production); reads default to idempotent, everything else not.
    """

    def wrap(f: F) -> F:
        setattr(f, _ATTR, make_tool(f, **options))
        return f

    return wrap(fn) if fn is not None else wrap


def tool_def_of(obj: Any) -> ToolDef | None:
    found = getattr(obj, _ATTR, None)
    return found if isinstance(found, ToolDef) else None


def _model_tool(name: str, declared: ToolSpec) -> ToolDef:
    """The tool of a declared model: no function (the model stages call the upstream),
    no retries of its own (the upstream client retries, before any byte is passed on)."""
    assert declared.input_schema is not None and declared.timeout is not None
    return ToolDef(
        name=name,
        fn=None,
        effect=EffectClass.READ,
        idempotent=True,
        timeout_s=declared.timeout.total_seconds(),
        retry=RetrySpec(),
        circuit=CircuitSpec(),
        untrusted_output=False,
        scope=declared.scope,
        description=declared.description or name,
        input=JsonSchemaValidator(declared.input_schema, finite_numbers=True),
        output=None,
        kind="model",
    )


class ToolRegistry:
    """The tools one gateway can call, by name, after the spec's overrides."""

    def __init__(self, tools: Mapping[str, ToolDef]) -> None:
        self._tools = dict(tools)

    def get(self, name: str) -> ToolDef | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Any:
        return iter(self._tools.values())

    def names(self) -> list[str]:
        return sorted(self._tools)

    @classmethod
    def build(
        cls,
        loaded: LoadedSpec,
        implementations: Iterable[Callable[..., Any]] | Mapping[str, Callable[..., Any]],
    ) -> ToolRegistry:
        """Join the spec's tool declarations with their implementations.

        Every tool the spec declares needs an implementation, and every implementation
        must be declared in the spec: the spec is the complete list of what the agent can do.
        """
        impls: dict[str, Callable[..., Any]] = {}
        if isinstance(implementations, Mapping):
            impls.update(implementations)
        else:
            for fn in implementations:
                found = tool_def_of(fn)
                impls[found.name if found else getattr(fn, "__name__", repr(fn))] = fn
        issues: list[SpecIssue] = []
        tools: dict[str, ToolDef] = {}
        for name, declared in loaded.spec.tools.items():
            if name.startswith(MODEL_TOOL_PREFIX) and name[len(MODEL_TOOL_PREFIX):] in (
                loaded.spec.models
            ):
                tools[name] = _model_tool(name, declared)
                continue
            bound = impls.get(name)
            if bound is None:
                issues.append(
                    loaded.issue(("tools", name), "declared tool has no implementation bound")
                )
                continue
            base = tool_def_of(bound)
            if base is None:
                base = make_tool(bound, name=name)
            elif base.fn is not bound:
                base = base.bind(bound)
            if base.name != name:
                base = replace(base, name=name)
            try:
                tools[name] = base.with_spec(declared)
            except Exception as exc:  # a bad JSON Schema in the spec
                issues.append(loaded.issue(("tools", name), f"invalid schema: {exc}"))
                continue
            if base.untyped_params and declared.input_schema is None and declared.any_schema is None:
                params = ", ".join(base.untyped_params)
                issues.append(loaded.issue(
                    ("tools", name),
                    f"tool {name!r} has parameters without a type ({params}): annotate them, "
                    "give the tool an 'input_schema', or declare 'schema: any' to accept "
                    "any value on purpose",
                ))
                continue
            if tools[name].credential_param and not tools[name].credential:
                issues.append(loaded.issue(
                    ("tools", name),
                    f"the implementation takes a Secret ({tools[name].credential_param!r}); "
                    "set 'credential: env:NAME' (or file:/hmac:) for it",
                ))
        for name in sorted(set(impls) - set(loaded.spec.tools)):
            issues.append(
                SpecIssue(
                    loaded.file,
                    loaded.line_of(("tools",)),
                    "tools",
                    f"implementation {name!r} is bound but the spec does not declare it",
                )
            )
        if issues:
            raise SpecError(issues)
        return cls(tools)
