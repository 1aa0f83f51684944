"""Peer benchmarks: Warden's policy engine vs Microsoft AGT and the CEL library.

``ruleset`` is importable without any peer installed; the bench modules import
their peer lazily and raise a clear ``ImportError`` subclass when it is missing.
"""

from .ruleset import (
    Rule,
    decision_histogram,
    make_call,
    make_calls,
    make_rules,
    reference_decision,
    to_cel,
    to_warden_rule,
)

__all__ = [
    "Rule",
    "decision_histogram",
    "make_call",
    "make_calls",
    "make_rules",
    "reference_decision",
    "to_cel",
    "to_warden_rule",
]
