"""The ``warden`` command."""

from warden.cli._app import app, main

__all__ = ["app", "main"]
