"""Policy as code: CEL rules compiled once, windows, facts and provenance."""

from warden.policy._derived import CompiledWindow, LazyVariables, WindowKeyError
from warden.policy._engine import (
    CONTEXT_ROOTS,
    CompiledRule,
    Decision,
    Policy,
    ToolPolicy,
)
from warden.policy._provenance import ProvenanceTracker
from warden.policy._windows import WindowPlan, Windows

__all__ = [
    "CONTEXT_ROOTS",
    "CompiledRule",
    "CompiledWindow",
    "Decision",
    "LazyVariables",
    "Policy",
    "ProvenanceTracker",
    "ToolPolicy",
    "WindowKeyError",
    "WindowPlan",
    "Windows",
]
