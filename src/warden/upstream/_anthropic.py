"""Anthropic upstreams: ``POST {base_url}/v1/messages``."""

from __future__ import annotations

from typing import Any, ClassVar, Unpack

from warden.upstream._client import KeySource, Upstream, UpstreamOptions
from warden.upstream._convert import openai_to_anthropic
from warden.upstream._types import ChatRequest, OpenAIChatRequest, Wire


class AnthropicUpstream(Upstream):
    """Anthropic's messages API, or a server that speaks it.

    ``base_url`` excludes the version path, as in Anthropic's own client
    (``https://api.anthropic.com``). The credential goes in ``x-api-key``; ``version`` is
    sent as ``anthropic-version``. A request without ``max_tokens`` (Anthropic requires
    one; OpenAI-shaped requests often have none) gets ``default_max_tokens``.
    """

    wire: ClassVar[Wire] = "anthropic"
    path: ClassVar[str] = "/v1/messages"

    def __init__(
        self,
        base_url: str = "https://api.anthropic.com",
        api_key: KeySource = None,
        *,
        version: str = "2023-06-01",
        default_max_tokens: int = 4096,
        **options: Unpack[UpstreamOptions],
    ) -> None:
        super().__init__(base_url, api_key, **options)
        self.version = version
        self.default_max_tokens = default_max_tokens

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self.version}
        if key:
            headers["x-api-key"] = key
        return headers

    def _body(self, request: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
        if isinstance(request, OpenAIChatRequest):
            body = openai_to_anthropic(request, default_max_tokens=self.default_max_tokens)
        else:
            body = request.to_body()
            if body.get("max_tokens") is None:
                body["max_tokens"] = self.default_max_tokens
        body["model"] = model
        if stream:
            body["stream"] = True
        else:
            body.pop("stream", None)
        return body
