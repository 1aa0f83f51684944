"""Storage: SQLAlchemy Core tables and engines for SQLite (embedded default) and PostgreSQL."""

from warden.store._engine import Store, default_store_url
from warden.store._tables import metadata

__all__ = ["Store", "default_store_url", "metadata"]
