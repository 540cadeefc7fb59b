"""Typed dependencies of the gateway routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from gateway.auth import Principal
from gateway.models import AuditEntry
from gateway.settings import GatewaySettings
from gateway.timeline import Timeline
from gateway.upstream import ServiceClient
from servicekit.db import session_scope
from servicekit.logging import current_request_context
from servicekit.runtime import Runtime


@dataclass
class Services:
    contacts: ServiceClient
    interactions: ServiceClient
    followups: ServiceClient

    def all(self) -> list[ServiceClient]:
        return [self.contacts, self.interactions, self.followups]


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(request.app.state.runtime.sessionmaker):
        yield session


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _timeline(request: Request) -> Timeline:
    timeline: Timeline = request.app.state.timeline
    return timeline


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


# scope="function": the transaction commits before the response is sent.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
ServicesDep = Annotated[Services, Depends(_services)]
TimelineDep = Annotated[Timeline, Depends(_timeline)]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
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
