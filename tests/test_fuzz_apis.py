"""Schemathesis against the three services' OpenAPI documents, with every default check on: no 5xx, every
response matches its schema (status, content type, headers, body), invalid input rejected, valid input accepted.

The gateway's own document is fuzzed the same way, with the admin key, in front of the three services; and
every secured operation refuses a call without a valid key.

The fuzzed app runs in-process (ASGI, its lifespan started by Schemathesis) on a real database and a real
nats-server; the services it calls run with uvicorn on real ports in a thread each. Each API gets at least
``FUZZ_CASES`` generated cases per run (1,000 in CI; ``make fuzz`` sets 20,000), half valid and half invalid
data, spread over all its operations. Failures are collected over the whole run and reported together, each
with the curl command that reproduces it. ``FUZZ_BACKENDS`` picks the databases (``sqlite`` by default).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.python import asgi

from servicekit.db import make_engine, make_sessionmaker
from servicekit.testing.nats import NatsServer
from servicekit.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
FULL_RUN = 1000
FUZZ_CASES = int(os.environ.get("FUZZ_CASES", str(FULL_RUN)))
# How long one call may take. Schemathesis's default (10 s) counts the whole body of an in-process app: a
# contacts CSV export after 20,000 cases (about 1,900 contacts) took longer on a machine at load 10, a finding
# about the machine, not the API; a call that hangs is still a failure.
CALL_TIMEOUT_S = float(os.environ.get("FUZZ_CALL_TIMEOUT_S", "60"))
# A valid-looking one-time token that no link has: 410, as for a used or replaced link (documented), not a fault.
TOKEN_REFUSALS = {("POST /api/v1/auth/password", 410), ("POST /api/v1/auth/password-link", 410)}
# Only these operations ("POST /api/v1/followups,GET /api/v1/audit"), to reproduce a finding without the rest.
OPERATIONS = [o.strip() for o in os.environ.get("FUZZ_OPERATIONS", "").split(",") if o.strip()]
BACKENDS = [b.strip() for b in os.environ.get("FUZZ_BACKENDS", "sqlite").split(",") if b.strip()]
ADMIN_KEY = "tp_fuzz_admin_key_0123456789abcdef"
ALEMBIC = {
    "contacts": ROOT / "services/contacts/alembic.ini",
    "interactions": ROOT / "services/interactions/alembic.ini",
    "followups": ROOT / "services/followups/alembic.ini",
    "gateway": ROOT / "gateway/alembic.ini",
}

# Minutes, not seconds, on a busy machine: give each run room beyond the suite-wide 300 s.
pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(max(900, FUZZ_CASES // 2))]

# Rules a JSON Schema cannot state, documented in docs/: in positive cases the generated value is made to
# follow them, so that "valid data is accepted" tests the rest of the document. Negative cases keep whatever
# was generated, and hostile-input tests cover these rules themselves.
# - An IANA zone, a BCP 47 tag, a deliverable email, an E.164 number: replaced by a valid one.
SEMANTIC: dict[str, Callable[[int], Any]] = {
    "timezone": lambda n: "Europe/Paris",
    "tz": lambda n: "Europe/Paris",  # the follow-up queue's "today" is in this zone
    "language": lambda n: "en-GB",
    "emails": lambda n: [f"fuzz.{n}@example.com"],
    "email": lambda n: f"fuzz.{n}@example.com",
    "phones": lambda n: [f"+1202555{n % 10_000:04d}"],
    "phone": lambda n: f"+1202555{n % 10_000:04d}",
    # Times checked against the clock: a touchpoint happened in the past, a snooze ends in the future.
    "occurred_at": lambda n: "2026-01-05T09:00:00+01:00",
    "until": lambda n: "2099-01-05T09:00:00Z",
    # A window's start: a date-time the schema allows but UTC cannot hold (0001-01-01T00:01+01:02) is a 422.
    "since": lambda n: "2026-01-01T00:00:00Z",
    "due_at": lambda n: "2030-01-05T09:00:00Z",
    "expires_at": lambda n: "2099-01-05T09:00:00Z",  # an API key's end
    # Policy durations: ISO 8601, at most 10 years (no regular expression says "at most 10 years").
    "offset": lambda n: f"P{n % 30}D",
    "quiet_for": lambda n: "P60D",
    "after": lambda n: "PT4H",
    "overdue_after": lambda n: "P1D",
    "closes_from": lambda n: "P1D",
    "offset_by_channel": lambda n: {"email": "PT2H"},
    # A thread id is printable text (Unicode's printable classes are no regular expression).
    "thread_id": lambda n: f"thread-{n % 50}",
    # An amount has at most 4 decimal places (a JSON number cannot say so reliably).
    "amount": lambda n: f"{n % 10_000}.50",
}
# - A bulk action carries its own fields only; assign names someone or a team, snooze an end.
BULK_FIELDS = {"assign": {"assignee", "team"}, "complete": {"outcome"}, "snooze": {"until"}, "cancel": {"reason"}}
# - A webhook calls a public address (the fuzzed gateway allows loopback ones: nothing is listening there).
# - A CSV import is a file with known columns: a positive case sends a small one (hostile CSV is tested apart).
CSV_BODY = "name,email,tier\r\nFuzz {n},fuzz.csv.{n}@example.com,standard\r\n"
# - Opaque values only the API hands out (a cursor, an ETag): dropped.
DROPPED_QUERY = {"cursor", "before"}
DROPPED_HEADERS = {"if-match"}
# - An Idempotency-Key sent with another request is refused (422): each positive case gets a fresh one.
FRESH_HEADERS = {"idempotency-key"}


def make_semantic(value: Any, n: int, semantic: dict[str, Callable[[int], Any]] = SEMANTIC) -> Any:
    """A positive value that also follows the rules above, and two that hold for every text field: no U+0000
    (PostgreSQL text cannot hold it) and not only white space (text is trimmed, and blank text is refused)."""
    if isinstance(value, dict):
        if value.get("event") == "contact.quiet" and value.get("quiet_for") is None:
            value = {**value, "quiet_for": "P60D"}  # - A contact.quiet trigger has its quiet_for.
        if "ids" in value and value.get("action") in BULK_FIELDS:
            others = set().union(*BULK_FIELDS.values()) - BULK_FIELDS[value["action"]]
            value = {k: v for k, v in value.items() if k not in others}
            if value["action"] == "assign" and value.get("assignee") is None and value.get("team") is None:
                value["team"] = "support"
            if value["action"] == "snooze" and value.get("until") is None:
                value["until"] = "2099-01-05T09:00:00Z"
        if "url" in value and "events" in value:
            value = {**value, "url": f"http://127.0.0.1:9/hook-{n}"}
        return {
            make_semantic(k, n, semantic): (
                semantic[k](n) if k in semantic and v is not None else make_semantic(v, n, semantic)
            )
            for k, v in value.items()
        }
    if isinstance(value, list):
        items = [make_semantic(v, n, semantic) for v in value]
        # - The steps of a policy have distinct ids.
        if all(isinstance(v, dict) and isinstance(v.get("id"), str) for v in items):
            items = [{**v, "id": f"{v['id'][:90]}-{i}"} for i, v in enumerate(items)] if len(items) > 1 else items
        return items
    if isinstance(value, str):
        value = value.replace("\x00", "")
        return value + "x" if value and not value.strip() else value
    return value


@pytest.fixture(params=[b if b == "sqlite" else pytest.param(b, marks=pytest.mark.postgres) for b in BACKENDS])
def db_backend(request: pytest.FixtureRequest) -> str:
    """This module's own backends: SQLite in CI (the checks are about the HTTP contract), both in ``make fuzz``."""
    return str(request.param)


@contextmanager
def served(app: Any) -> Iterator[str]:
    """Run an ASGI app (lifespan included) with uvicorn on a free port, in a thread with its own event loop."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the app on port {port} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def lifespans_closed() -> Iterator[None]:
    """Schemathesis starts an app's lifespan on first use; stop it when the test ends (not at exit)."""
    try:
        yield
    finally:
        asgi.shutdown_lifespans()


def fuzz(
    app: FastAPI,
    *,
    openapi: str,
    cases: int,
    headers: dict[str, str] | None = None,
    known: dict[str, Callable[[int], Any]] | None = None,
) -> dict[str, Any]:
    """Run ``cases`` generated cases (half positive, half negative) and return the tally and failures.

    ``known`` adds values that must exist (a contact's id): positive cases refer to them."""
    semantic = {**SEMANTIC, **(known or {})}
    document = schemathesis.openapi.from_asgi(openapi, app)
    schema = document.include(name=OPERATIONS) if OPERATIONS else document
    failures: dict[tuple[str, str], str] = {}
    counts: dict[str, int] = {}
    statuses: dict[int, int] = {}
    started = time.perf_counter()

    def check(case: Any, mode: GenerationMode) -> None:
        label = case.operation.label
        counts[label] = counts.get(label, 0) + 1
        if mode is GenerationMode.POSITIVE:
            n = sum(counts.values())
            if isinstance(case.body, dict | list):
                case.body = make_semantic(case.body, n, semantic)
            elif case.media_type == "text/csv":
                case.body = CSV_BODY.format(n=n)
            if case.query:
                case.query = make_semantic({k: v for k, v in case.query.items() if k not in DROPPED_QUERY}, n, semantic)
            if case.path_parameters:
                case.path_parameters = {k: make_semantic(v, n, semantic) for k, v in case.path_parameters.items()}
            if case.headers:
                case.headers = {
                    k: (f"fuzz-{n}" if k.lower() in FRESH_HEADERS else v)
                    for k, v in case.headers.items()
                    if k.lower() not in DROPPED_HEADERS
                }
        try:
            response = case.call_and_validate(headers=headers, timeout=CALL_TIMEOUT_S)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        except (Exception, BaseExceptionGroup) as exc:
            found = list(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else [exc]
            for failure in found:
                if isinstance(failure, RejectedPositiveData) and (label, failure.status_code) in TOKEN_REFUSALS:
                    continue
                title = str(failure).strip().splitlines()[0] if str(failure).strip() else ""
                failures.setdefault((label, f"{type(failure).__name__}: {title}"), str(exc)[:3000])

    def checking(mode: GenerationMode) -> Callable[[Any], None]:
        return lambda case: check(case, mode)

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        run = settings(
            max_examples=cases // 2,
            deadline=None,
            database=None,
            derandomize=os.environ.get("FUZZ_RANDOM") is None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )(given(case=schema.as_strategy(generation_mode=mode))(checking(mode)))
        run()
    return {"counts": counts, "failures": failures, "statuses": statuses, "seconds": time.perf_counter() - started}


def report(name: str, result: dict[str, Any]) -> str:
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(result["statuses"].items()))
    lines = [f"{name}: {sum(result['counts'].values())} cases in {result['seconds']:.1f} s ({statuses})"]
    for (label, what), text in sorted(result["failures"].items()):
        lines.append(f"--- {label}: {what}" + ("" if os.environ.get("FUZZ_BRIEF") else f"\n{text}"))
    return "\n".join(lines)


def assert_clean(name: str, result: dict[str, Any], app: FastAPI) -> None:
    print(report(name, result))
    total = sum(result["counts"].values())
    assert total >= FUZZ_CASES, f"{name}: only {total} cases generated (wanted {FUZZ_CASES}): {result['counts']}"
    documented = {
        f"{method.upper()} {path}" for path, ops in app.openapi()["paths"].items() for method in ops if method != "head"
    }
    missed = documented - set(result["counts"])
    # A quick look with a few hundred cases may not reach every operation; the CI count must.
    assert not missed or total < FULL_RUN or OPERATIONS, f"{name}: operations never exercised: {sorted(missed)}"
    assert 200 in result["statuses"] or 201 in result["statuses"], result["statuses"]
    assert not result["failures"], report(name, result)


def contacts_app(url: str, nats_url: str) -> FastAPI:
    from services.contacts.app import create_app
    from services.contacts.settings import ContactsSettings

    return create_app(ContactsSettings(database_url=url, nats_url=nats_url, log_level="WARNING", log_json=False))


def interactions_app(url: str, nats_url: str, contacts_url: str) -> FastAPI:
    from services.interactions.app import create_app
    from services.interactions.settings import InteractionsSettings

    settings_ = InteractionsSettings(
        database_url=url, nats_url=nats_url, contacts_url=contacts_url, log_level="WARNING", log_json=False
    )
    return create_app(settings_)


def followups_app(url: str, nats_url: str, contacts_url: str) -> FastAPI:
    from services.followups.app import create_app
    from services.followups.settings import FollowupsSettings

    settings_ = FollowupsSettings(
        database_url=url, nats_url=nats_url, contacts_url=contacts_url, log_level="WARNING", log_json=False
    )
    return create_app(settings_)


def gateway_app(url: str, nats_url: str, upstreams: dict[str, str]) -> FastAPI:
    from gateway.app import create_app
    from gateway.settings import GatewaySettings

    settings_ = GatewaySettings(
        database_url=url,
        nats_url=nats_url,
        admin_key=ADMIN_KEY,
        secret_key="fuzz-secret-key-0123456789",
        log_level="WARNING",
        log_json=False,
        # The fuzzer is one caller sending as fast as it can; the limit itself is tested elsewhere.
        rate_limit_per_minute=10_000_000,
        rate_limit_burst=1_000_000,
        webhooks_allow_private=True,  # positive cases name a loopback receiver (see make_semantic)
        contacts_url=upstreams["contacts"],
        interactions_url=upstreams["interactions"],
        followups_url=upstreams["followups"],
    )
    return create_app(settings_)


Databases = Callable[[Path], str]


def a_contact(contacts_url: str) -> dict[str, Callable[[int], Any]]:
    """A contact that exists, for positive cases that refer to one (an unknown contact_id is a 422)."""
    with httpx.Client(base_url=contacts_url, timeout=10) as http:
        created = http.post("/v1/contacts", json={"name": "Fuzz", "emails": ["fuzz.contact@example.com"]})
    assert created.status_code == 201, created.text
    contact_id = created.json()["id"]
    return {"contact_id": lambda n: contact_id}


def test_contacts_api_fuzz(database_factory: Databases, nats_server: NatsServer) -> None:
    app = contacts_app(database_factory(ALEMBIC["contacts"]), nats_server.url)
    with lifespans_closed():
        result = fuzz(app, openapi="/openapi.json", cases=FUZZ_CASES)
    assert_clean("contacts", result, app)


@pytest.mark.parametrize("name", ["interactions", "followups"])
def test_service_behind_contacts_fuzz(name: str, database_factory: Databases, nats_server: NatsServer) -> None:
    """Interactions and follow-ups check every contact they are given with a real contacts service."""
    make_app = {"interactions": interactions_app, "followups": followups_app}[name]
    contacts = contacts_app(database_factory(ALEMBIC["contacts"]), nats_server.url)
    with served(contacts) as contacts_url, lifespans_closed():
        app = make_app(database_factory(ALEMBIC[name]), nats_server.url, contacts_url)
        result = fuzz(app, openapi="/openapi.json", cases=FUZZ_CASES, known=a_contact(contacts_url))
    assert_clean(name, result, app)


# The people and the team the gateway's examples (gateway/examples.py) give work to: an assignee, an owner or a
# team must be a known one (a 422 otherwise), so positive cases name these.
STAFF: dict[str, Callable[[int], Any]] = {
    "assignee": lambda n: "grace",
    "owner": lambda n: "grace",
    "team": lambda n: "customer-success",
    "teams": lambda n: ["customer-success"],
}


async def _seed_staff(url: str) -> None:
    from gateway.models import StaffUser, Team

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            joined = datetime(2026, 1, 1, tzinfo=UTC)
            session.add(Team(id="customer-success", name="Customer success", created_at=joined))
            session.add(
                StaffUser(
                    email="grace@touchpoint.example",
                    handle="grace",
                    name="Grace Hopper",
                    teams=["customer-success"],
                    role="agent",
                    password_hash="!",  # signs in with no password: the fuzzer uses the admin key
                    created_at=joined,
                )
            )
            await session.commit()
    finally:
        await engine.dispose()


@pytest.fixture
def gateway(database_factory: Databases, nats_server: NatsServer) -> Iterator[FastAPI]:
    """The gateway in-process, in front of the three services on real ports."""
    with ExitStack() as stack:
        contacts_url = stack.enter_context(served(contacts_app(database_factory(ALEMBIC["contacts"]), nats_server.url)))
        upstreams = {
            "contacts": contacts_url,
            "interactions": stack.enter_context(
                served(interactions_app(database_factory(ALEMBIC["interactions"]), nats_server.url, contacts_url))
            ),
            "followups": stack.enter_context(
                served(followups_app(database_factory(ALEMBIC["followups"]), nats_server.url, contacts_url))
            ),
        }
        stack.enter_context(lifespans_closed())
        gateway_url = database_factory(ALEMBIC["gateway"])
        asyncio.run(_seed_staff(gateway_url))
        yield gateway_app(gateway_url, nats_server.url, upstreams)


def test_gateway_api_fuzz(gateway: FastAPI) -> None:
    """The gateway's /api/v1/openapi.json with the admin key: its document states what the services behind it
    check (gateway/contract.py), so what it calls valid is taken and what it calls invalid is refused."""
    result = fuzz(
        gateway,
        openapi="/api/v1/openapi.json",
        # Half again as many: the gateway has about 100 operations, twice a service's, and 1,000 cases left one of
        # them unexercised now and then.
        cases=FUZZ_CASES * 3 // 2,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        known={**a_contact(gateway.state.settings.contacts_url), **STAFF},
    )
    assert_clean("gateway", result, gateway)


def test_gateway_rejects_every_operation_without_credentials(gateway: FastAPI) -> None:
    """Every operation that declares a security requirement answers 401 problem+json to no key and to a wrong one."""
    document = gateway.openapi()
    secured = [
        (method, path)
        for path, ops in document["paths"].items()
        for method, op in ops.items()
        if op.get("security", document.get("security"))
    ]
    assert len(secured) >= 30, secured
    with served(gateway) as url, httpx.Client(base_url=url, timeout=10) as client:
        for method, path in secured:
            concrete = path.replace("{", "").replace("}", "")  # any id: auth is checked before the lookup
            for headers in ({}, {"Authorization": "Bearer tp_not_a_key_at_all_0000000000"}):
                response = client.request(method.upper(), concrete, headers=headers, json={})
                assert response.status_code == 401, (method, path, headers, response.status_code, response.text)
                assert response.headers["content-type"].startswith("application/problem+json"), (method, path)


def test_served_upstreams_answer(database_factory: Databases, nats_server: NatsServer) -> None:
    """The thread-served helper really serves: a contact created over the socket is read back."""
    app = contacts_app(database_factory(ALEMBIC["contacts"]), nats_server.url)
    with served(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        created = http.post("/v1/contacts", json={"name": "Ada", "emails": ["ada.fuzz@example.com"]})
        assert created.status_code == 201, created.text
        read = http.get(f"/v1/contacts/{created.json()['id']}")
        assert read.status_code == 200
        created_at = read.json()["created_at"]
        assert datetime.fromisoformat(created_at).utcoffset() is not None, created_at
