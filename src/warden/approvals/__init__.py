"""Approvals: the persistent queue of actions waiting for a human."""

from warden.approvals._queue import ApprovalQueue, ApprovalRecord
from warden.approvals._waiter import ApprovalWaiter, Watch

__all__ = ["ApprovalQueue", "ApprovalRecord", "ApprovalWaiter", "Watch"]
