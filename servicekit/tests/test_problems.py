"""servicekit's problem handling: a validation error raised inside a service, where the route's schema had already
let the input through, is the caller's 422, never a 500, and its values stay out of the log (issue 18, item 15)."""

from __future__ import annotations

from typing import Annotated

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field

from servicekit.logging import configure_logging
from servicekit.problems import install_problem_handlers

SECRET = "zq-input-7f3a9c"


class Whole(BaseModel):
    tags: Annotated[list[str], Field(max_length=2)]


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/model")
    async def model(body: dict[str, list[str]]) -> object:
        return Whole.model_validate(body)  # as a service re-checks a merged patch

    @app.post("/value")
    async def value(body: dict[str, str]) -> object:
        raise ValueError(f"not a time zone: {body['tz']}")  # as domain validation does

    @app.post("/unicode")
    async def unicode(body: dict[str, str]) -> object:
        return body["text"].encode("ascii")  # UnicodeEncodeError, a ValueError, quoting the input

    return app


async def test_validation_errors_inside_a_route_are_422_problems_and_log_no_input(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(service="test", json=True)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()), base_url="http://t") as client:
        model = await client.post("/model", json={"tags": [SECRET, SECRET, SECRET]})
        value = await client.post("/value", json={"tz": SECRET})
        unicode = await client.post("/unicode", json={"text": SECRET + "\u00e9"})
    for answer in (model, value, unicode):
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert answer.json()["type"].endswith("/validation")
    assert model.json()["errors"] == [
        {"loc": ["tags"], "msg": "List should have at most 2 items after validation, not 3", "type": "too_long"}
    ]
    assert SECRET not in model.text  # pydantic's input is not echoed either
    assert SECRET in value.json()["detail"]  # the domain's message goes back to the caller who sent it
    logged = capsys.readouterr().out
    assert "validation_refused" in logged and "value_refused" in logged
    assert SECRET not in logged
