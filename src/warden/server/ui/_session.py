"""Console sessions: an API key exchanged for a signed cookie, and CSRF tokens.

The cookie holds no secret of the key: only its id, a random session id and an expiry,
signed with HMAC-SHA256 under the console secret (``WARDEN_UI_SECRET``; ``warden serve``
makes one per start and hands it to every worker, so each worker accepts the others'
cookies). Every request looks the key up again by id, so a revoked or expired key ends its
sessions at once, and its role, tenant and approval roles are the stored ones, never the
cookie's. Sign-out forgets the session id in this process (see docs/console.md for what
that means with several processes).

CSRF: every form carries a token derived from the session id (before sign-in, from a
random pre-session cookie); every POST is refused unless the token matches. The cookies
are SameSite=Strict as well, so a cross-site form never carries them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass

from fastapi import Request, Response

SESSION_COOKIE = "warden_session"
PRESESSION_COOKIE = "warden_presession"
#: how long a sign-in lasts
SESSION_S = 8 * 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    key_id: str
    session_id: str
    expires: float


class Sessions:
    """Signs and reads session cookies; derives CSRF tokens; remembers sign-outs."""

    def __init__(self, secret: str | None) -> None:
        # Without a configured secret, sessions live as long as this process.
        self._secret = (secret or secrets.token_urlsafe(32)).encode()
        self._ended: dict[str, float] = {}
        self._lock = threading.Lock()

    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest())

    # -- sessions --------------------------------------------------------------------------

    def issue(self, key_id: str, now: float | None = None) -> tuple[str, Session]:
        now = time.time() if now is None else now
        session = Session(key_id, secrets.token_urlsafe(18), now + SESSION_S)
        body = _b64(
            json.dumps({"k": key_id, "s": session.session_id, "e": session.expires}).encode()
        )
        return f"{body}.{self._mac('session', body)}", session

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The cookie's session; None when absent, forged, expired or signed out."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 1000:
            return None
        body, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac("session", body)):
            return None
        try:
            data = json.loads(_unb64(body))
            session = Session(str(data["k"]), str(data["s"]), float(data["e"]))
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time() if now is None else now
        if session.expires <= now:
            return None
        with self._lock:
            if session.session_id in self._ended:
                return None
        return session

    def end(self, session: Session, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self._ended[session.session_id] = session.expires
            for sid in [s for s, until in self._ended.items() if until <= now]:
                del self._ended[sid]

    # -- CSRF ------------------------------------------------------------------------------

    def csrf_for(self, session_id: str) -> str:
        return self._mac("csrf", session_id)

    def csrf_ok(self, session_id: str, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token, self.csrf_for(session_id))


def secure(request: Request) -> bool:
    """Cookies are Secure when the console is served over TLS."""
    return request.url.scheme == "https"


def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/ui",
        httponly=True,
        secure=secure(request),
        samesite="strict",
    )


def clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name, path="/ui", httponly=True, secure=secure(request), samesite="strict"
    )


__all__ = [
    "PRESESSION_COOKIE",
    "SESSION_COOKIE",
    "Session",
    "Sessions",
    "clear_cookie",
    "set_cookie",
]
