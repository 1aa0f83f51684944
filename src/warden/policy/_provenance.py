"""Provenance: which argument values came from untrusted content seen earlier in the run.

Outputs of tools marked ``untrusted_output`` (ticket text, emails, web pages) are kept per
run. An argument value (a string of 3+ characters) that appears in such output is tagged
untrusted — unless the same value also came back, exactly, from a trusted tool (the
customer's email from the CRM corroborates the same address in the ticket text).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_MIN_LEN = 3


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    else:
        yield path, value


class ProvenanceTracker:
    """Per-run memory of untrusted and trusted tool output."""

    def __init__(self) -> None:
        self._untrusted: list[tuple[str, str]] = []  # (tool, text)
        self._trusted_values: set[str] = set()

    def observe(self, tool: str, output: Any, *, untrusted: bool) -> None:
        for _, leaf in _leaves(output):
            if isinstance(leaf, str) and leaf:
                if untrusted:
                    self._untrusted.append((tool, leaf))
                else:
                    self._trusted_values.add(leaf)

    def tag(self, args: Any) -> dict[str, Any]:
        """``{"untrusted_args": [...], "sources": {arg_path: [tool, ...]}}`` for the policy."""
        if not self._untrusted:
            return _CLEAN
        sources: dict[str, list[str]] = {}
        for path, leaf in _leaves(args):
            if not isinstance(leaf, str) or len(leaf) < _MIN_LEN or leaf in self._trusted_values:
                continue
            hits = sorted({tool for tool, text in self._untrusted if leaf in text})
            if hits:
                sources[path] = hits
        if not sources:
            return _CLEAN
        return {"untrusted_args": sorted(sources), "sources": sources}

    def snapshot(self) -> dict[str, Any]:
        return {
            "untrusted": [list(t) for t in self._untrusted],
            "trusted": sorted(self._trusted_values),
        }

    @classmethod
    def restore(cls, data: dict[str, Any]) -> ProvenanceTracker:
        tracker = cls()
        tracker._untrusted = [(str(t), str(x)) for t, x in data.get("untrusted", [])]
        tracker._trusted_values = set(data.get("trusted", []))
        return tracker


_CLEAN: dict[str, Any] = {"untrusted_args": [], "sources": {}}
