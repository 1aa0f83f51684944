"""The HTTP control plane: ``warden serve``."""

from warden.server._app import app_factory, create_app
from warden.server._settings import ServerSettings

__all__ = ["ServerSettings", "app_factory", "create_app"]
