"""Workflow specs: typed models and a YAML loader that locates every error."""

from warden.spec._loader import LoadedSpec, fingerprint, format_path, load_spec, load_spec_text
from warden.spec._models import (
    SLO,
    AgentSpec,
    CircuitSpec,
    Effect,
    EffectClass,
    Escalation,
    FactSpec,
    Limits,
    RetrySpec,
    Rule,
    TaskType,
    Tier,
    ToolSpec,
    WindowSpec,
    WorkflowSpec,
)

__all__ = [
    "SLO",
    "AgentSpec",
    "CircuitSpec",
    "Effect",
    "EffectClass",
    "Escalation",
    "FactSpec",
    "Limits",
    "LoadedSpec",
    "RetrySpec",
    "Rule",
    "TaskType",
    "Tier",
    "ToolSpec",
    "WindowSpec",
    "WorkflowSpec",
    "fingerprint",
    "format_path",
    "load_spec",
    "load_spec_text",
]
