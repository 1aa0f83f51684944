"""``warden diff OLD NEW``: what changed between two specs, in tools and policies.

Tools are compared by name (added, removed, and per field: ``effect``, ``input_schema``,
``output_schema`` and every other governance attribute), rules by name (added, removed,
and per field: ``when``, ``effect``, ``reason``, ``approvers``, ``risk``, ...). Facts,
windows and variables, which rules read, are compared by name too; a rule's meaning can
change through them without its own text changing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from warden.policy import Policy
from warden.spec import LoadedSpec

__all__ = ["SpecDiff", "diff_specs"]


@dataclass(frozen=True, slots=True)
class Section:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: name -> field -> {"old": ..., "new": ...}
    changed: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


@dataclass(frozen=True, slots=True)
class SpecDiff:
    old: str
    new: str
    old_fingerprint: str
    new_fingerprint: str
    old_policy_fingerprint: str
    new_policy_fingerprint: str
    tools: Section
    policies: Section
    facts: Section
    windows: Section
    variables: Section

    @property
    def empty(self) -> bool:
        return all(
            s.empty for s in (self.tools, self.policies, self.facts, self.windows, self.variables)
        )

    def sections(self) -> dict[str, Section]:
        return {
            "tools": self.tools,
            "policies": self.policies,
            "facts": self.facts,
            "windows": self.windows,
            "variables": self.variables,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "old": {
                "file": self.old,
                "spec_fingerprint": self.old_fingerprint,
                "policy_fingerprint": self.old_policy_fingerprint,
            },
            "new": {
                "file": self.new,
                "spec_fingerprint": self.new_fingerprint,
                "policy_fingerprint": self.new_policy_fingerprint,
            },
            **{name: s.to_json() for name, s in self.sections().items()},
        }


def _section(old: Mapping[str, Any], new: Mapping[str, Any]) -> Section:
    out = Section(
        added=sorted(set(new) - set(old)), removed=sorted(set(old) - set(new))
    )
    for name in sorted(set(old) & set(new)):
        a, b = old[name], new[name]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out.changed[name] = {
                key: {"old": a.get(key), "new": b.get(key)}
                for key in sorted({*a, *b}, key=_field_order)
                if a.get(key) != b.get(key)
            }
        else:
            out.changed[name] = {"value": {"old": a, "new": b}}
    return out


_FIRST = ("effect", "when", "input_schema", "output_schema", "reason")


def _field_order(key: str) -> tuple[int, str]:
    return (_FIRST.index(key) if key in _FIRST else len(_FIRST), key)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json", exclude_none=True, by_alias=True)


def diff_specs(old: LoadedSpec, new: LoadedSpec) -> SpecDiff:
    """What changed from ``old`` to ``new`` (both loaded; the policies are compiled too, so a
    candidate that does not load fails here with its line)."""
    a, b = old.spec, new.spec
    return SpecDiff(
        old.file,
        new.file,
        old.fingerprint,
        new.fingerprint,
        Policy(old).fingerprint,
        Policy(new).fingerprint,
        _section({k: _dump(v) for k, v in a.tools.items()}, {k: _dump(v) for k, v in b.tools.items()}),
        _section(
            {r.name: _dump(r) for r in a.policies}, {r.name: _dump(r) for r in b.policies}
        ),
        _section({k: _dump(v) for k, v in a.facts.items()}, {k: _dump(v) for k, v in b.facts.items()}),
        _section(
            {k: _dump(v) for k, v in a.windows.items()}, {k: _dump(v) for k, v in b.windows.items()}
        ),
        _section(dict(a.variables), dict(b.variables)),
    )
