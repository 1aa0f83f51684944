"""Tool factories named on the command line: ``package.module:function`` or
``path/to/file.py:function`` (``warden serve --tools``, ``warden validate --tools``)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warden.errors import UsageError


def load_factory(ref: str) -> Callable[[], Any]:
    """``package.module:function`` or ``path/to/file.py:function``."""
    module_ref, _, attr = ref.rpartition(":")
    if not module_ref or not attr:
        raise UsageError(f"tool factory {ref!r} must look like module:function or file.py:function")
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.exists():
            raise UsageError(f"tool factory file {path} does not exist")
        name = f"warden_tools_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_ref)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UsageError(f"{ref!r}: {attr} is not a function in {module_ref}")
    return factory  # type: ignore[no-any-return]
