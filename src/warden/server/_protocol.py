"""uvicorn's HTTP protocol with a deadline for a request's headers.

uvicorn limits how long an idle keep-alive connection stays open, but not how long a
client may take to send a request's headers: a client that connects and says nothing, or
sends one header line every few seconds (slowloris), holds its connection for ever, and
enough of them hold every connection the process can take. Here the headers must have
fully arrived ``header_timeout_s`` after the connection opened or the previous request
began; otherwise the connection is closed. The body has its own deadline, in the app
(``server._app.BodyLimit``), where it can be answered with a 408 problem.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@functools.cache
def header_timeout_s() -> float:
    """``WARDEN_HEADER_TIMEOUT_S``, which ``warden serve`` sets for every worker it starts."""
    from warden.server._settings import ServerSettings

    return ServerSettings().header_timeout_s


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that closes a connection whose request headers are late."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(header_timeout_s(), self._late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _late(self) -> None:
        self._header_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's headers are late while an earlier request is still
            # being served: look again once more time has passed.
            self._arm()
            return
        self.transport.close()
