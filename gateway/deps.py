"""Typed dependencies of the gateway routes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth import Principal
from gateway.models import AuditEntry
from gateway.projection import WriteThrough
from gateway.settings import GatewaySettings
from gateway.timeline import Timeline
from gateway.upstream import ServiceClient
from servicekit.deps import RuntimeDep as RuntimeDep
from servicekit.deps import SessionDep as SessionDep
from servicekit.logging import current_request_context
from servicekit.runtime import Runtime


@dataclass
class Services:
    contacts: ServiceClient
    interactions: ServiceClient
    followups: ServiceClient

    def all(self) -> list[ServiceClient]:
        return [self.contacts, self.interactions, self.followups]


# async: a plain ``def`` dependency runs in the threadpool, a thread hop on every request for a getattr.
async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _timeline(request: Request) -> Timeline:
    timeline: Timeline = request.app.state.timeline
    return timeline


async def _write_through(request: Request) -> WriteThrough:
    write_through: WriteThrough = request.app.state.write_through
    return write_through


async def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


ServicesDep = Annotated[Services, Depends(_services)]
TimelineDep = Annotated[Timeline, Depends(_timeline)]
WriteThroughDep = Annotated[WriteThrough, Depends(_write_through)]
SettingsDep = Annotated[GatewaySettings, Depends(_settings)]


async def record_audit(
    *,
    session: AsyncSession,
    runtime: Runtime,
    principal: Principal,
    action: str,
    target: str | None,
    outcome: int,
    detail: dict[str, Any] | None = None,
) -> None:
    """One audit row, in the caller's transaction. ``detail`` must hold ids, never personal data."""
    session.add(
        AuditEntry(
            at=runtime.clock.now(),
            actor_kind=principal.kind,
            actor_id=principal.id,
            role=principal.role.value,
            action=action,
            target=target,
            outcome=outcome,
            request_id=current_request_context().get("request_id"),
            detail=detail or {},
        )
    )
