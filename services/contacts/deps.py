"""Typed dependencies of the contacts routes."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.db import session_scope
from services.contacts.service import ContactService


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(request.app.state.runtime.sessionmaker):
        yield session


def _contacts(request: Request) -> ContactService:
    service: ContactService = request.app.state.runtime.state["contacts"]
    return service


# scope="function": the transaction commits before the response is sent.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
ContactsDep = Annotated[ContactService, Depends(_contacts)]
