"""Typed dependencies of the follow-ups routes."""

from typing import Annotated

from fastapi import Depends, Request

from servicekit.deps import ReadSessionDep as ReadSessionDep
from servicekit.deps import RuntimeDep as RuntimeDep
from servicekit.deps import SessionDep as SessionDep
from services.followups.policybook import PolicyBook
from services.followups.service import FollowupService


# async: a plain ``def`` dependency runs in the threadpool, a thread hop on every request for a getattr.
async def _followups(request: Request) -> FollowupService:
    service: FollowupService = request.app.state.runtime.state["followups"]
    return service


async def _policies(request: Request) -> PolicyBook:
    book: PolicyBook = request.app.state.runtime.state["policies"]
    return book


FollowupsDep = Annotated[FollowupService, Depends(_followups)]
PoliciesDep = Annotated[PolicyBook, Depends(_policies)]
