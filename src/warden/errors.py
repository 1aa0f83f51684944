"""Warden's exception hierarchy.

Policy outcomes (deny, pending, failures of a tool) are *results*, not exceptions: see
``warden.results``. Exceptions are for three things kept apart:

- misuse of the API by the caller (``UsageError``),
- inputs Warden cannot load (``SpecError``, ``CelError`` at compile time),
- runtime failures of Warden's own machinery (``StoreError``, ``CelEvalError``).

The CLI maps every ``WardenError`` to one readable line and a non-zero exit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class WardenError(Exception):
    """Root of every exception Warden raises on purpose."""


class UsageError(WardenError):
    """The caller used the API wrongly (closed run, unknown id, bad argument)."""


class NotFoundError(UsageError):
    """An id (run, approval, switch, ...) that the store does not hold."""


class ForbiddenError(UsageError):
    """The caller is known but may not do this (wrong agent, missing approval role, ...)."""


class ConflictError(UsageError):
    """The request conflicts with what is recorded (an idempotency key bound to another call)."""


class InvalidInputError(UsageError):
    """Input that cannot be represented faithfully (e.g. a lone surrogate in a string)."""


class StoreError(WardenError):
    """The store could not do what was asked (unreachable, schema out of date, ...)."""


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a workflow spec, located precisely enough to fix it."""

    file: str
    line: int | None
    path: str
    message: str
    expected: str | None = None
    found: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{where}: {self.path or '<root>'}: {self.message}"
        if self.expected is not None:
            text += f" (expected {self.expected}"
            text += f", found {self.found})" if self.found is not None else ")"
        return text


class SpecError(WardenError):
    """A workflow spec that cannot be loaded; carries every issue found."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class CelError(WardenError):
    """Root of errors from the CEL policy language."""


class CelSyntaxError(CelError):
    """A CEL expression that does not parse. ``line``/``column`` are 1-based in the source."""

    def __init__(self, message: str, line: int, column: int) -> None:
        self.line = line
        self.column = column
        self.detail = message
        super().__init__(f"line {line}, column {column}: {message}")


class CelCompileError(CelError):
    """A CEL expression that parses but cannot be compiled (unknown identifier, bad macro)."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        self.line = line
        self.column = column
        self.detail = message
        super().__init__(f"line {line}, column {column}: {message}")


class CelEvalError(CelError):
    """Evaluating a compiled expression failed (no such key, bad types, overflow, ...).

    The policy engine turns this into a deny: rules fail closed.
    """


class ToolError(WardenError):
    """Raised by a tool implementation to report a failure in its own terms.

    - ``effect=False``: the tool declares that nothing happened (the remote service refused
      before acting). Only such an error frees a write's idempotency key for a retry; any
      other failure of a write settles it as ``unknown`` (the effect may have happened).
    - ``retryable=True``: the call can be retried safely even if the tool is not idempotent;
      it implies ``effect=False``.
    - ``fault="tool"``: the tool itself failed (its upstream is down, a server-side error).
      Only such failures (and timeouts and unexpected exceptions) count towards the circuit
      breaker; the default ``"caller"`` (bad arguments, "not found") never opens it.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        effect: bool | None = None,
        fault: Literal["caller", "tool"] = "caller",
    ) -> None:
        self.retryable = retryable
        self.effect = False if retryable else effect
        self.fault = fault
        super().__init__(message)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (of the driver's, for a wrapped one),
    short enough for an error line or a problem detail."""
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0][:200]
