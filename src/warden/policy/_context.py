"""What a rule can read besides ``args``, ``window`` and ``facts``: the evaluation context
as a table, for the load-time type checker (``warden.policy._typecheck``).

``args`` (each tool's input schema), ``window`` (the spec's windows) and ``facts`` (each
fact tool's output schema) depend on the spec and its tools and are typed there. Everything
else is fixed by the gateway, and written down here, once:

- ``CONTEXT_TYPES``: dotted path -> type. A path's parents are records holding exactly the
  listed fields, so ``run.end_user`` is a load error until ``run.end_user`` is listed here.
- ``CONTEXT_VALUES``: dotted path -> the strings it can hold, so ``tool.effect == "delte"``
  (a rule that could never fire) is a load error too.

Adding a context field? Put the value into the activation (``RunState.context()``,
``pipeline._services._tool_context``, ``stages._policy.PolicyStage.evaluate``), add its path
here, and document it in docs/policies.md ("The evaluation context"). A test compares this
table with what the gateway really builds.

Type notation: ``int``, ``uint``, ``double``, ``string``, ``bool``, ``bytes``, ``null``,
``timestamp``, ``duration``, ``dyn`` (not checked), ``list<T>``, ``map<K, V>`` (any keys),
and ``T | U`` (either; ``string | null`` for an optional value).
"""

from __future__ import annotations

from collections.abc import Mapping

from warden.spec import MODEL_TOOL_PREFIX, EffectClass, ModelSpec, Tier

CONTEXT_TYPES: dict[str, str] = {
    "tenant": "string",
    # services clock at the decision (stages._policy)
    "now": "timestamp",
    # pipeline._services._tool_context
    "tool.name": "string",
    "tool.effect": "string",
    "tool.scope": "string | null",
    "tool.idempotent": "bool",
    "tool.untrusted_output": "bool",
    # "tool" for a tool, "model" for a model call (the tool ``model:<name>``)
    "tool.kind": "string",
    # policy._context.model_context: the model a model call goes to; null on tool calls
    "model.name": "string | null",
    "model.id": "string | null",
    "model.upstream": "string | null",
    "model.provider": "string | null",
    # gateway.Gateway.open_run (and the run's reload): RunState.principal
    "principal.agent": "string",
    "principal.scopes": "list<string>",
    # the API key id of an HTTP call (None in process)
    "principal.key": "string | null",
    # pipeline._call.RunState.context
    "run.id": "string",
    "run.step": "int",
    "run.tier": "string",
    "run.task_type": "string | null",
    "run.end_user": "string | null",
    "run.opened_by": "string | null",
    "run.risk": "double",
    "run.counts": "map<string, int>",
    # what the run's model calls cost so far (USD, priced when each call settled)
    "run.cost_usd": "double",
    "run.tokens": "int",
    # policy._provenance.ProvenanceTracker.tag
    "provenance.untrusted_args": "list<string>",
    "provenance.sources": "map<string, list<string>>",
    "provenance.origins": "map<string, list<map<string, string>>>",
    "provenance.sensitive_args": "list<string>",
    "provenance.sensitive_sources": "map<string, list<string>>",
    "provenance.sensitive_origins": "map<string, list<map<string, string>>>",
}

CONTEXT_VALUES: dict[str, frozenset[str]] = {
    "tool.effect": frozenset(e.value for e in EffectClass),
    "run.tier": frozenset(t.value for t in Tier),
    "tool.kind": frozenset({"tool", "model"}),
}

#: ``model`` on a tool call: every field null
NO_MODEL: dict[str, str | None] = {"name": None, "id": None, "upstream": None, "provider": None}


def model_context(models: Mapping[str, ModelSpec], tool: str) -> dict[str, str | None]:
    """The ``model`` value rules see for a call of ``tool`` (``model:<name>``)."""
    found = models.get(tool.removeprefix(MODEL_TOOL_PREFIX)) if tool.startswith(
        MODEL_TOOL_PREFIX
    ) else None
    if found is None:
        return NO_MODEL
    return {
        "name": tool.removeprefix(MODEL_TOOL_PREFIX),
        "id": found.model,
        "upstream": found.upstream,
        "provider": found.pricing_provider,
    }

#: The roots whose type comes from the spec and its tools, not from this table.
SPEC_ROOTS = frozenset({"args", "window", "facts", "variables"})
