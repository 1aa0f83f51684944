"""The append-only, hash-chained ledger: writing, reading back, verifying (online against
the store, offline from an export), signed checkpoints, and settling writes left without
an outcome."""

from warden.ledger._archive import ArchiveReport, ArchiveResult, archive, verify_archive
from warden.ledger._canonical import canonical_json, to_jsonable
from warden.ledger._checkpoint import (
    Checkpoint,
    checkpoint_loop,
    merge_into_file,
    read_checkpoint_file,
    stored_checkpoints,
    take_checkpoint,
)
from warden.ledger._export import MAX_PAGE, ExportPage, decode_cursor, export_page
from warden.ledger._keys import KEY_ENV, generate_key, key_path, load_private_key, load_public_key
from warden.ledger._offline import read_export, verify_export
from warden.ledger._otlp import OtlpLogSink, otlp_logs_enabled
from warden.ledger._read import LedgerEvent, export_jsonl, iter_events
from warden.ledger._reconcile import Unsettled, settle, unsettled
from warden.ledger._verify import Problem, VerifyReport, verify
from warden.ledger._writer import LedgerWriter, flush_writers

__all__ = [
    "KEY_ENV",
    "MAX_PAGE",
    "ArchiveReport",
    "ArchiveResult",
    "Checkpoint",
    "ExportPage",
    "LedgerEvent",
    "LedgerWriter",
    "OtlpLogSink",
    "Problem",
    "Unsettled",
    "VerifyReport",
    "archive",
    "canonical_json",
    "checkpoint_loop",
    "decode_cursor",
    "export_jsonl",
    "export_page",
    "flush_writers",
    "generate_key",
    "iter_events",
    "key_path",
    "load_private_key",
    "load_public_key",
    "merge_into_file",
    "otlp_logs_enabled",
    "read_checkpoint_file",
    "read_export",
    "settle",
    "stored_checkpoints",
    "take_checkpoint",
    "to_jsonable",
    "unsettled",
    "verify",
    "verify_archive",
    "verify_export",
]
