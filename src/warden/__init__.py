"""Warden: a production control plane for AI agents.

Every tool call an agent makes passes one pipeline — kill switches, identity, schema,
policy, approval, execution, verification — and leaves a tamper-evident record.
"""

from warden.approvals import ApprovalRecord
from warden.errors import (
    CelCompileError,
    CelError,
    CelEvalError,
    CelSyntaxError,
    NotFoundError,
    SpecError,
    SpecIssue,
    StoreError,
    ToolError,
    UsageError,
    WardenError,
)
from warden.gateway import Gateway, Run, SyncGateway, SyncRun
from warden.pipeline._models import ChatResult, ChatStreamResult
from warden.results import Allowed, Denied, Drafted, Failed, FailureKind, Pending, Result
from warden.spec import Effect, EffectClass, Tier, load_spec
from warden.tools import FieldError, tool

__all__ = [
    "Allowed",
    "ApprovalRecord",
    "CelCompileError",
    "CelError",
    "CelEvalError",
    "CelSyntaxError",
    "ChatResult",
    "ChatStreamResult",
    "Denied",
    "Drafted",
    "Effect",
    "EffectClass",
    "Failed",
    "FailureKind",
    "FieldError",
    "Gateway",
    "NotFoundError",
    "Pending",
    "Result",
    "Run",
    "SpecError",
    "SpecIssue",
    "StoreError",
    "SyncGateway",
    "SyncRun",
    "Tier",
    "ToolError",
    "UsageError",
    "WardenError",
    "load_spec",
    "tool",
]
