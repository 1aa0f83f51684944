"""Errors of model upstreams: one family under ``UpstreamError``, a runtime failure.

Every error says which upstream failed and why, carries what the upstream answered (its
status and error body, with the credential scrubbed out), and whether trying again may
help. Nothing here ever holds the credential: messages and bodies are redacted before an
error is built, so an error is safe to log, to record in the ledger and to show a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from warden.errors import WardenError

if TYPE_CHECKING:
    from warden.upstream._types import Skip

#: Why a call failed, in words a route record and a metric can group by.
Reason = Literal[
    "rate_limited",  # HTTP 429
    "server_error",  # HTTP 5xx (Anthropic's 529 "overloaded" included)
    "timeout",  # no answer in time (also HTTP 408)
    "connect_error",  # no connection (refused, DNS, TLS, reset before an answer)
    "circuit_open",  # not tried: the upstream's breaker is open
    "bad_response",  # an answer Warden cannot read (not JSON, wrong shape)
    "client_error",  # HTTP 4xx other than 408/429: the request itself is at fault
    "stream_interrupted",  # a stream broke after some of it was passed on
    "exhausted",  # every target of a fallback chain failed
]

#: Failures after which the next target of a fallback chain is tried.
FALLBACK_REASONS: frozenset[str] = frozenset(
    {"rate_limited", "server_error", "timeout", "connect_error", "circuit_open"}
)


class UpstreamError(WardenError):
    """A model upstream did not give a usable answer.

    ``status`` is the HTTP status when the upstream answered one; ``body`` is its error body
    (parsed JSON, or text cut to 2,000 characters), never containing the credential.
    ``retryable`` says whether the same request may succeed later on the same upstream;
    ``retry_after`` is how long the upstream asked to wait, in seconds, when it said so.
    ``attempts`` counts the requests made before giving up; ``skipped`` lists the targets
    of a fallback chain that failed before this one.
    """

    def __init__(
        self,
        message: str,
        *,
        upstream: str,
        reason: Reason,
        status: int | None = None,
        retryable: bool = False,
        body: Any = None,
        retry_after: float | None = None,
        attempts: int = 0,
    ) -> None:
        self.upstream = upstream
        self.reason: Reason = reason
        self.status = status
        self.retryable = retryable
        self.body = body
        self.retry_after = retry_after
        self.attempts = attempts
        self.skipped: tuple[Skip, ...] = ()
        super().__init__(message)

    @property
    def falls_back(self) -> bool:
        """Whether a fallback chain moves on to its next target after this failure."""
        return self.reason in FALLBACK_REASONS


class UpstreamStatusError(UpstreamError):
    """The upstream answered with an error status (or an error event before a stream's
    first byte reached the caller)."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer within the call's timeout."""


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream (refused, unreachable, reset before an answer)."""


class UpstreamCircuitOpen(UpstreamError):
    """Not tried: the upstream failed too often lately and its circuit breaker is open."""


class UpstreamResponseError(UpstreamError):
    """The upstream answered something Warden cannot read as a reply of its kind."""


class UpstreamStreamInterrupted(UpstreamError):
    """A stream broke after some of it had been passed on, so it cannot be retried.

    Its usage is unknown: what the caller got so far was generated and may be billed.
    """


class UpstreamsExhausted(UpstreamError):
    """Every target of a fallback chain failed; ``skipped`` says how, in order."""

    def __init__(self, message: str, *, skips: tuple[Skip, ...]) -> None:
        last = skips[-1] if skips else None
        super().__init__(
            message,
            upstream=last.upstream if last else "",
            reason="exhausted",
            status=last.status if last else None,
            # every reason a chain falls back on is transient
            retryable=True,
        )
        self.skipped = skips
