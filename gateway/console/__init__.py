"""The staff console: server-rendered pages over the gateway's own API (see docs/console.md)."""

from fastapi import APIRouter

from gateway.console import admin, customers, dashboard, queue, routes, search, timeline

router = APIRouter(include_in_schema=False)
# The customer pages first: /customers/new must not be taken for a customer id by the timeline's page.
router.include_router(customers.router)
router.include_router(admin.router)
router.include_router(queue.router)
router.include_router(timeline.router)
router.include_router(search.router)
router.include_router(routes.router)
router.include_router(dashboard.router)

__all__ = ["router"]
