"""Telemetry: what leaves the governed call besides its result.

This branch adds PII redaction and the vault (docs/pii.md): ``PiiRedactor`` tokenizes
personal data in every event before the sinks see it; ``Vault`` holds tenant keys, sealed
raw values and the record of their reads, and shreds a tenant's key.
"""

from warden.telemetry._detect import KINDS as PII_KINDS
from warden.telemetry._detect import PiiKind
from warden.telemetry._detect import find as find_pii
from warden.telemetry._redact import PiiRedactor, is_token, pii_redactor
from warden.telemetry._vault import Vault, VaultError, VaultRead, master_key, new_master_key

__all__ = [
    "PII_KINDS",
    "PiiKind",
    "PiiRedactor",
    "Vault",
    "VaultError",
    "VaultRead",
    "find_pii",
    "is_token",
    "master_key",
    "new_master_key",
    "pii_redactor",
]
