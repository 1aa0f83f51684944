"""API keys, roles, tenant scope and rate limits for the HTTP control plane."""

from warden.auth._keys import ALL_TENANTS, KeyInfo, KeyStore, Principal, Role
from warden.auth._ratelimit import RateLimiter

__all__ = ["ALL_TENANTS", "KeyInfo", "KeyStore", "Principal", "RateLimiter", "Role"]
