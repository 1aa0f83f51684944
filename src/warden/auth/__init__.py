"""API keys, roles, tenant scope, agent binding, approval roles and rate limits for the
HTTP control plane."""

from warden.auth._keys import (
    ALL_TENANTS,
    BIND_HINT,
    MAX_TOKEN_CHARS,
    KeyInfo,
    KeyStore,
    Principal,
    Role,
)
from warden.auth._ratelimit import RateLimiter

__all__ = [
    "ALL_TENANTS",
    "BIND_HINT",
    "MAX_TOKEN_CHARS",
    "KeyInfo",
    "KeyStore",
    "Principal",
    "RateLimiter",
    "Role",
]
