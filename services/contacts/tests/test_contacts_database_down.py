from __future__ import annotations

from servicekit.clock import MovableClock
from servicekit.testing.apps import running_app
from servicekit.testing.nats import NatsServer
from servicekit.testing.ports import free_port
from services.contacts.app import create_app
from services.contacts.settings import ContactsSettings


async def test_a_database_that_is_down_is_a_503_with_retry_after(nats_server: NatsServer, clock: MovableClock) -> None:
    # Nothing listens on this port: like PostgreSQL during a restart or a failover.
    settings = ContactsSettings(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/contacts",
        nats_url=nats_server.url, log_json=False,
    )  # fmt: skip
    async with running_app(create_app(settings, clock=clock)) as client:
        for response in (
            await client.post("/v1/contacts", json={"name": "Ada"}),
            await client.get("/v1/contacts", params={"q": "ada"}),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert int(response.headers["retry-after"]) > 0
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("down")


async def test_lost_connections_are_classified_as_database_down() -> None:
    from sqlalchemy.exc import DBAPIError, IntegrityError

    from servicekit.problems import _is_database_down

    class ConnectionDoesNotExistError(Exception):
        pass

    lost = DBAPIError("SELECT 1", {}, ConnectionDoesNotExistError("connection was closed in the middle"))
    assert _is_database_down(lost)
    assert not _is_database_down(IntegrityError("INSERT", {}, Exception("duplicate key value")))
