"""Where notifications go: webhook targets as written in the configuration (YAML)."""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from warden.errors import WardenError


class WebhookTarget(BaseModel):
    """One receiver of webhook notifications.

    ``secret`` is a reference (``env:NAME`` or ``file:NAME``) to the signing secret, never
    the secret itself. ``events`` lists the kinds the receiver wants (``approval_requested``,
    ``sla_breach``, ...); empty means every kind.
    """

    # hide_input_in_errors: a validation error must not print a secret pasted into `secret`.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: str
    secret: str
    events: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=5.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except httpx.InvalidURL as exc:
            raise ValueError(f"not a valid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: str) -> str:
        scheme, sep, name = value.partition(":")
        if scheme == "hmac" and sep:
            raise ValueError(
                "hmac: references mint a new token per call, which a receiver cannot verify "
                "signatures with; use env:NAME or file:NAME"
            )
        if not sep or scheme not in ("env", "file") or not name:
            raise ValueError(
                "must be a reference such as env:WARDEN_WEBHOOK_SECRET or file:NAME; keep the "
                "secret itself in that environment variable or secrets file"
            )
        return value

    def wants(self, kind: str) -> bool:
        return not self.events or kind in self.events


class NotifyError(WardenError):
    """The webhook configuration cannot be loaded."""


_TARGETS = TypeAdapter(list[WebhookTarget])


def load_webhook_targets(path: Path) -> list[WebhookTarget]:
    """The targets in a YAML or JSON file: a list of targets, or ``{"webhooks": [...]}``.

    Raises ``NotifyError`` naming the file and each invalid field.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise NotifyError(f"cannot read webhooks file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise NotifyError(f"webhooks file {path} is not valid YAML/JSON: {exc}") from None
    if data is None:
        return []
    if isinstance(data, dict) and set(data) == {"webhooks"}:
        data = data["webhooks"] or []
    if not isinstance(data, list):
        raise NotifyError(
            f"webhooks file {path} must hold a list of targets (url, secret, events, "
            "timeout_s), or a mapping with the single key 'webhooks'"
        )
    try:
        return _TARGETS.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"[{'.'.join(str(p) for p in e['loc'])}] {e['msg']}" for e in exc.errors()
        )
        raise NotifyError(f"webhooks file {path}: {problems}") from None
