"""Typed dependencies of the follow-ups routes."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.applications import Starlette

from servicekit.deps import ReadSessionDep as ReadSessionDep
from servicekit.deps import RuntimeDep as RuntimeDep
from servicekit.deps import SessionDep as SessionDep
from services.followups.policybook import PolicyBook
from services.followups.scheduler import Scheduler
from services.followups.service import FollowupService


@dataclass(frozen=True)
class FollowupsState:
    """The follow-ups service's own objects, built in the lifespan and kept as ``app.state.followups``."""

    followups: FollowupService
    policies: PolicyBook
    scheduler: Scheduler


def followups_state(app: Starlette) -> FollowupsState:
    state: FollowupsState = app.state.followups
    return state


# async: a plain ``def`` dependency runs in the threadpool, a thread hop on every request for a getattr.
async def _followups(request: Request) -> FollowupService:
    return followups_state(request.app).followups


async def _policies(request: Request) -> PolicyBook:
    return followups_state(request.app).policies


FollowupsDep = Annotated[FollowupService, Depends(_followups)]
PoliciesDep = Annotated[PolicyBook, Depends(_policies)]
