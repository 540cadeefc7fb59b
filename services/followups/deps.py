"""Typed dependencies of the follow-ups routes."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.db import session_scope
from servicekit.runtime import Runtime
from services.followups.policybook import PolicyBook
from services.followups.service import FollowupService


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(request.app.state.runtime.sessionmaker):
        yield session


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _followups(request: Request) -> FollowupService:
    service: FollowupService = request.app.state.runtime.state["followups"]
    return service


def _policies(request: Request) -> PolicyBook:
    book: PolicyBook = request.app.state.runtime.state["policies"]
    return book


# scope="function": the transaction commits before the response is sent.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
FollowupsDep = Annotated[FollowupService, Depends(_followups)]
PoliciesDep = Annotated[PolicyBook, Depends(_policies)]
