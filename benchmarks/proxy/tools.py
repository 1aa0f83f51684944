"""Tool factory for the model-proxy benchmark: ``--tools benchmarks/proxy/tools.py:tools``.

The workflow declares no tools (only a model, which is its own tool ``model:gpt-4o``), and
``warden serve`` wants one factory per spec: this one registers nothing.
"""

from __future__ import annotations

from typing import Any


def tools() -> list[Any]:
    return []
