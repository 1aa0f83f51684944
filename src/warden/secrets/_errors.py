"""The one exception type of ``warden.secrets``."""

from __future__ import annotations

from warden.errors import WardenError


class SecretError(WardenError):
    """A secret could not be resolved, minted or verified.

    Messages name the reference and what to set or fix; they never contain a secret value
    (nor a token), so they are safe to log and to show to an operator.
    """
