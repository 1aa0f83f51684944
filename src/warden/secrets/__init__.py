"""Credentials for tools: referenced by name, minted per call, never shown.

``SecretResolver.mint("env:STRIPE_KEY")`` returns a ``Secret`` whose ``repr`` hides the
value; ``Redactor`` scrubs minted values from anything that is logged or stored;
``verify_minted`` is the backend's side of ``hmac:`` per-call tokens.
"""

from warden.secrets._errors import SecretError
from warden.secrets._redact import REDACTED, Redactor
from warden.secrets._resolver import MAX_TTL, SecretResolver, parse_ref, verify_minted
from warden.secrets._types import Secret

__all__ = [
    "MAX_TTL",
    "REDACTED",
    "Redactor",
    "Secret",
    "SecretError",
    "SecretResolver",
    "parse_ref",
    "verify_minted",
]
