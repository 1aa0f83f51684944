"""The append-only, hash-chained ledger: writing, reading back, verifying."""

from warden.ledger._canonical import canonical_json, to_jsonable
from warden.ledger._read import LedgerEvent, export_jsonl, iter_events
from warden.ledger._verify import Problem, VerifyReport, verify
from warden.ledger._writer import LedgerWriter

__all__ = [
    "LedgerEvent",
    "LedgerWriter",
    "Problem",
    "VerifyReport",
    "canonical_json",
    "export_jsonl",
    "iter_events",
    "to_jsonable",
    "verify",
]
