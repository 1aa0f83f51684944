"""The stages of the governed call, one module each.

A stage is ``async (call, next) -> Result``: it may stop the call with a result, or pass it
on with ``await next(call)`` and look at what came back. A stage that reserves something
(window entries, an approval, an idempotency key, a lock) settles it itself when ``next``
returns or raises. Stages never call each other; only ``Pipeline`` knows their order.
"""

from warden.pipeline.stages._approval import ApprovalStage, outcome_of_approval
from warden.pipeline.stages._base import Next, Stage, plain
from warden.pipeline.stages._caps import CapsStage
from warden.pipeline.stages._draft import DraftStage
from warden.pipeline.stages._execute import ExecuteStage
from warden.pipeline.stages._idempotency import IdempotencyStage, ReplayStage
from warden.pipeline.stages._identity import IdentityStage
from warden.pipeline.stages._policy import PolicyStage
from warden.pipeline.stages._record import RecordStage
from warden.pipeline.stages._schema import SchemaStage
from warden.pipeline.stages._serialize import SerializeStage
from warden.pipeline.stages._switches import SwitchStage
from warden.pipeline.stages._tool import ToolStage
from warden.pipeline.stages._verify import VerifyStage

__all__ = [
    "ApprovalStage",
    "CapsStage",
    "DraftStage",
    "ExecuteStage",
    "IdempotencyStage",
    "IdentityStage",
    "Next",
    "PolicyStage",
    "RecordStage",
    "ReplayStage",
    "SchemaStage",
    "SerializeStage",
    "Stage",
    "SwitchStage",
    "ToolStage",
    "VerifyStage",
    "outcome_of_approval",
    "plain",
]
