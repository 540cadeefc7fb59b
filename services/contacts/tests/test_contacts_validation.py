"""Input the schema lets through but the contact's rules refuse (issue 18, item 15): each is a 422 problem, never a
500, and no value a caller sent is written to the log (the 500's traceback wrote them into contacts.log)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from services.contacts.tests.conftest import contact_factory

PROBLEM = "application/problem+json"
MARK = "zq" + uuid.uuid4().hex[:10]  # a value no log line has a reason to hold


def _assert_422(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == 422 and body["type"].endswith("/validation"), body
    return body


async def _created(client: httpx.AsyncClient) -> str:
    made = await client.post("/v1/contacts", json=contact_factory())
    assert made.status_code == 201, made.text
    return str(made.json()["id"])


BAD_PATCHES: dict[str, Any] = {
    "attributes over 16 KB in total": {"attributes": {f"{MARK}{i}": "x" * 1000 for i in range(20)}},
    "a handle key with a blank": {"handles": {"BAD KEY": f"{MARK}-handle"}},
    "25 handles": {"handles": {f"chan{i}": f"{MARK}-{i}" for i in range(25)}},
    "null attributes and lone surrogates": None,  # raw JSON below: json.dumps cannot write a lone surrogate
}
SURROGATES = '{"attributes": null, "external_ids": {"omx": "\\u00c2F\\u0088\\ud901\\ude89\\u00de\\udb63\\ude81B"}}'


@pytest.mark.parametrize("case", list(BAD_PATCHES))
async def test_a_patch_that_would_make_an_invalid_contact_is_a_422_problem(
    client: httpx.AsyncClient, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    contact_id = await _created(client)
    patch = BAD_PATCHES[case]
    content = SURROGATES if patch is None else json.dumps(patch)
    response = await client.patch(
        f"/v1/contacts/{contact_id}", content=content, headers={"content-type": "application/json"}
    )
    body = _assert_422(response)
    assert body["errors"] and all({"loc", "msg", "type"} >= set(e) for e in body["errors"])
    assert (await client.get(f"/v1/contacts/{contact_id}")).json()["version"] == 1  # nothing stored
    logged = capsys.readouterr()
    assert MARK not in logged.out + logged.err and "ud901" not in logged.out + logged.err


@pytest.mark.parametrize("identity", ["email", "handle"])
async def test_resolve_that_would_give_a_21st_email_or_handle_is_a_422_problem(
    client: httpx.AsyncClient, identity: str, capsys: pytest.CaptureFixture[str]
) -> None:
    n = uuid.uuid4().hex[:6]
    create: dict[str, Any]
    if identity == "email":
        create = {"emails": [f"{MARK}.{n}.{i}@example.com" for i in range(20)]}
        body: dict[str, Any] = {"email": f"{MARK}.{n}.new@example.com", "create": create}
    else:
        create = {"handles": {f"chan{i}": f"{MARK}-{n}-{i}" for i in range(20)}}
        body = {"handle": {"channel": "extra", "value": f"{MARK}-{n}-new"}, "create": create}
    _assert_422(await client.post("/v1/contacts/resolve", json=body))
    logged = capsys.readouterr()
    assert MARK not in logged.out + logged.err
