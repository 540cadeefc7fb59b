"""The staff console: server-rendered pages over the gateway's own API (see docs/console.md)."""

from gateway.console.routes import router

__all__ = ["router"]
