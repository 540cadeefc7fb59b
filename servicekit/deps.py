"""Typed dependencies every service's routes share (Annotated aliases, as in full-stack-fastapi-template)."""

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.db import session_scope
from servicekit.runtime import Runtime


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async for session in session_scope(request.app.state.runtime.sessionmaker):
        yield session


# async: a plain ``def`` dependency runs in the threadpool, a thread hop on every request for a getattr.
async def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


# scope="function": the transaction commits before the response is sent, so a failed commit is an error
# response, never a success that did not happen.
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]
RuntimeDep = Annotated[Runtime, Depends(_runtime)]
