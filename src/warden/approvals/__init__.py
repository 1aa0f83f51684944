"""Approvals: the persistent queue of actions waiting for a human."""

from warden.approvals._queue import ApprovalQueue, ApprovalRecord

__all__ = ["ApprovalQueue", "ApprovalRecord"]
