"""Approvals: the persistent queue of actions waiting for a human."""

from warden.approvals._queue import ApprovalQueue, ApprovalRecord
from warden.approvals._suggest import (
    Citation,
    History,
    Suggestion,
    read_history,
    suggest,
    suggest_many,
)
from warden.approvals._waiter import ApprovalWaiter, Watch

__all__ = [
    "ApprovalQueue",
    "ApprovalRecord",
    "ApprovalWaiter",
    "Citation",
    "History",
    "Suggestion",
    "Watch",
    "read_history",
    "suggest",
    "suggest_many",
]
