"""Typed dependencies of the interactions routes.

Each is ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop per request
and dependency that cost single POSTs a tenth of the service's CPU under load."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from starlette.applications import Starlette

from servicekit.deps import ReadConnectionDep as ReadConnectionDep
from servicekit.deps import RuntimeDep as RuntimeDep
from servicekit.deps import SessionDep as SessionDep
from services.interactions.flows import Ingestion
from services.interactions.idempotency import checked_key
from services.interactions.service import TouchpointService


@dataclass(frozen=True)
class InteractionsState:
    """The interactions service's own objects, built in the lifespan and kept as ``app.state.interactions``."""

    touchpoints: TouchpointService
    ingestion: Ingestion


def interactions_state(app: Starlette) -> InteractionsState:
    state: InteractionsState = app.state.interactions
    return state


async def _touchpoints(request: Request) -> TouchpointService:
    return interactions_state(request.app).touchpoints


async def _ingestion(request: Request) -> Ingestion:
    return interactions_state(request.app).ingestion


async def _idempotency(
    idempotency_key: Annotated[
        str | None,
        Header(
            description="Replays the first response of a request with this key (kept 24 h)",
            # Stated for clients; checked_key enforces it (400).
            json_schema_extra={"pattern": "^[\\x20-\\x7e]{1,255}$"},
        ),
    ] = None,
    x_touchpoint_caller: Annotated[
        str | None,
        Header(
            description="Who calls (set by the gateway): the scope of Idempotency-Key",
            json_schema_extra={"maxLength": 200},
        ),
    ] = None,
) -> tuple[str | None, str]:
    return checked_key(idempotency_key, x_touchpoint_caller)


TouchpointsDep = Annotated[TouchpointService, Depends(_touchpoints)]
IngestionDep = Annotated[Ingestion, Depends(_ingestion)]
# (Idempotency-Key or None, caller)
IdempotencyDep = Annotated[tuple[str | None, str], Depends(_idempotency)]
