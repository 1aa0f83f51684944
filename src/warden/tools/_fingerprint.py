"""The tool-schema fingerprint a run records: what the agent could call and how.

A hash over every tool's name, kind, effect class, scope, idempotency and input and output
JSON Schemas, as the gateway's registry holds them (implementation joined with spec), so a
change in a tool's signature shows in the runs recorded after it even when the spec text
is unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from warden.ledger._canonical import canonical_json
from warden.tools._registry import ToolDef


def _schema(validator: Any) -> Any:
    return None if validator is None else getattr(validator, "schema", None)


def tool_schema_fingerprint(tools: Iterable[ToolDef]) -> str:
    content = {
        t.name: {
            "kind": t.kind,
            "effect": t.effect.value,
            "scope": t.scope,
            "idempotent": t.idempotent,
            "input": _schema(t.input),
            "output": _schema(t.output),
        }
        for t in sorted(tools, key=lambda t: t.name)
    }
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()
