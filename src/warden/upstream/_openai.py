"""OpenAI-compatible upstreams: OpenAI itself, Azure OpenAI, vLLM, Ollama, and any server
that speaks ``POST {base_url}/chat/completions``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Unpack

from warden.upstream._client import KeySource, Upstream, UpstreamOptions
from warden.upstream._convert import anthropic_to_openai
from warden.upstream._types import AnthropicChatRequest, ChatRequest, Wire


class OpenAIUpstream(Upstream):
    """An OpenAI-compatible chat completions server.

    ``base_url`` includes the version path, as in OpenAI's own client
    (``https://api.openai.com/v1``, ``http://localhost:11434/v1`` for Ollama). Azure OpenAI:
    ``base_url=https://{resource}.openai.azure.com/openai/deployments/{deployment}``,
    ``auth="api-key"`` and ``query={"api-version": "..."}``. Without a credential (a local
    vLLM or Ollama) no auth header is sent.

    Streams ask the server to report usage (``stream_options.include_usage``); the usage
    chunk reaches the caller only if it asked for it too. Set ``stream_usage=False`` for a
    server that rejects the option — its streams then have unknown usage.
    """

    wire: ClassVar[Wire] = "openai"
    path: ClassVar[str] = "/chat/completions"

    def __init__(
        self,
        base_url: str = "https://api.openai.com/v1",
        api_key: KeySource = None,
        *,
        auth: Literal["bearer", "api-key"] = "bearer",
        query: Mapping[str, str] | None = None,
        stream_usage: bool = True,
        **options: Unpack[UpstreamOptions],
    ) -> None:
        super().__init__(base_url, api_key, **options)
        self.auth = auth
        self.stream_usage = stream_usage
        self._params = dict(query or {})

    def _query(self) -> Mapping[str, str]:
        return self._params

    def _auth_headers(self, key: str | None) -> dict[str, str]:
        if not key:
            return {}
        return {"authorization": f"Bearer {key}"} if self.auth == "bearer" else {"api-key": key}

    def _body(self, request: ChatRequest, model: str, stream: bool) -> dict[str, Any]:
        if isinstance(request, AnthropicChatRequest):
            body = anthropic_to_openai(request)
        else:
            body = request.to_body()
        body["model"] = model
        if stream:
            body["stream"] = True
            if self.stream_usage:
                options = body.get("stream_options")
                body["stream_options"] = {
                    **(options if isinstance(options, dict) else {}),
                    "include_usage": True,
                }
        else:
            # OpenAI refuses stream_options on a call that does not stream
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body
