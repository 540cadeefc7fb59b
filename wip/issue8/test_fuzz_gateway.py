"""Schemathesis against the gateway's /api/v1/openapi.json with the admin key (parked: see README.md)."""

from __future__ import annotations

from fastapi import FastAPI

from tests.test_fuzz_apis import ADMIN_KEY, FUZZ_CASES, assert_clean, db_backend, fuzz, gateway  # noqa: F401


def test_gateway_api_fuzz(gateway: FastAPI) -> None:  # noqa: F811
    result = fuzz(
        gateway, openapi="/api/v1/openapi.json", cases=FUZZ_CASES, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert_clean("gateway", result, gateway)
