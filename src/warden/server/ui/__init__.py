"""The operator console under ``/ui``: server-rendered pages over the /v1 API's routes.

See docs/console.md. ``router`` is included by ``warden.server.create_app``.
"""

from __future__ import annotations

from fastapi import APIRouter

from warden.server.ui import _approvals, _dashboards, _pages

router = APIRouter()
router.include_router(_pages.router)
router.include_router(_approvals.router)
router.include_router(_dashboards.router)

__all__ = ["router"]
