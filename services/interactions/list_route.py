"""``GET /v1/interactions`` (the contact page) served without FastAPI's generic dependency solving.

The timeline reads this page on every view. FastAPI solves a route's parameters with generic machinery
(dependency caches, an exit stack per request, a pass per parameter kind, and for each query parameter checks of
its kind: sequence, model, aliases): for this route's eleven query parameters and its connection that was about
a tenth of the page's CPU (py-spy, bench.ingest --part page).

``QueryParametersRoute`` validates each query parameter with the field FastAPI built for it (the same
validation, defaults and errors' locations), opens the connection as ReadConnectionDep does (closed before the
response is sent), and calls the same endpoint. A request with any invalid parameter is handed to FastAPI's own
handling, which gives its usual answer. ``tests/test_interactions_list_route.py`` checks both against FastAPI's
answers. Only for an endpoint whose parameters are the connection and plain optional query parameters (checked
when the route is built)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine, Sequence, Set
from contextlib import asynccontextmanager
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from fastapi import Request, Response, params
from fastapi.routing import APIRoute
from pydantic import BaseModel

from servicekit.deps import read_connection

_open_connection = asynccontextmanager(read_connection)
_IMMUTABLE = (type(None), int, float, str, bool)


class QueryParametersRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        generic = super().get_route_handler()
        endpoint = self.endpoint
        plan = _plan(self)

        async def handler(request: Request) -> Response:
            query = request.query_params
            values: dict[str, Any] = {}
            for name, field, default in plan:
                raw = query.get(name)
                if raw is None:
                    values[name] = default
                    continue
                value, errors = field.validate(raw, values, loc=("query", name))
                if errors:
                    return await generic(request)  # FastAPI's own answer to an invalid request
                values[name] = value
            async with _open_connection(request) as connection:
                response: Response = await endpoint(connection=connection, **values)
            return response

        return handler


def _plan(route: APIRoute) -> list[tuple[str, Any, Any]]:
    """(name, field, default) of each query parameter, after checking the endpoint is one this route serves."""
    dependant = route.dependant
    names = list(inspect.signature(route.endpoint).parameters)
    query = dependant.query_params
    served = (
        names[:1] == ["connection"]
        and [d.call for d in dependant.dependencies] == [read_connection]
        and [f.name for f in query] == names[1:]
        and not (dependant.path_params or dependant.header_params or dependant.cookie_params or dependant.body_params)
        and not route.dependencies
    )
    if not served:
        raise TypeError(f"{route.endpoint.__name__} must take a ReadConnectionDep `connection` and query parameters")
    plan = []
    for field in query:
        info = field.field_info
        plain = (
            isinstance(info, params.Query)
            and field.alias == field.name
            and info.validation_alias is None
            and not info.is_required()
            and not info.validate_default
            and isinstance(field.default, _IMMUTABLE)
            and not _sequence_or_model(info.annotation)
        )
        if not plain:
            raise TypeError(f"query parameter {field.name} is not a plain optional one")
        plan.append((field.name, field, field.default))
    return plan


def _sequence_or_model(annotation: Any) -> bool:
    """Whether FastAPI reads this parameter otherwise than as one value (a list of values, or a model of them)."""
    kinds = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    for kind in kinds:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        origin = get_origin(kind) or kind
        if not inspect.isclass(origin) or issubclass(origin, (str, bytes)):
            continue
        if issubclass(origin, (list, tuple, Sequence, Set, BaseModel)):
            return True
    return False
