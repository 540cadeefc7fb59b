"""Schemathesis against each service's OpenAPI document, in-process (the ASGI app with its lifespan, a real
database and a real nats-server), with every default check on: no 5xx, every response matches its schema
(status, content type, headers, body), invalid input rejected, valid input accepted.

Each API gets at least ``FUZZ_CASES`` generated cases per run (2,000 in CI; ``make fuzz`` sets more), half
valid and half invalid data, spread over all its operations. Failures are collected over the whole run and
reported together, each with a curl command that reproduces it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.python import asgi

from servicekit.testing.nats import NatsServer

ROOT = Path(__file__).resolve().parents[1]
FUZZ_CASES = int(os.environ.get("FUZZ_CASES", "2000"))

# Values a JSON Schema cannot describe (an IANA zone, a BCP 47 tag, a deliverable email, an E.164 number, an
# opaque cursor): in positive cases they are replaced by valid ones, so that "valid data is accepted" tests the
# rest of the document. Negative cases keep whatever was generated.
SEMANTIC: dict[str, Callable[[int], Any]] = {
    "timezone": lambda n: "Europe/Paris",
    "language": lambda n: "en-GB",
    "emails": lambda n: [f"fuzz.{n}@example.com"],
    "email": lambda n: f"fuzz.{n}@example.com",
    "phones": lambda n: [f"+1202555{n % 10_000:04d}"],
    "phone": lambda n: f"+1202555{n % 10_000:04d}",
}
DROPPED_QUERY = {"cursor"}


def make_semantic(value: Any, n: int) -> Any:
    if isinstance(value, dict):
        return {
            k: (SEMANTIC[k](n) if k in SEMANTIC and v is not None else make_semantic(v, n)) for k, v in value.items()
        }
    if isinstance(value, list):
        return [make_semantic(v, n) for v in value]
    return value


@contextmanager
def lifespan_closed() -> Iterator[None]:
    """Schemathesis starts an app's lifespan on first use; stop it when the test ends (not at exit)."""
    try:
        yield
    finally:
        asgi.shutdown_lifespans()


def fuzz(app: FastAPI, *, cases: int = FUZZ_CASES, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cases`` generated cases (half positive, half negative) and return the tally and failures."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: dict[tuple[str, str], str] = {}
    counts: dict[str, int] = {}
    started = time.perf_counter()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

        @settings(
            max_examples=cases // 2,
            deadline=None,
            database=None,
            derandomize=os.environ.get("FUZZ_RANDOM") is None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate],
        )
        @given(case=schema.as_strategy(generation_mode=mode))
        def run(case: Any, mode: GenerationMode = mode) -> None:
            label = case.operation.label
            counts[label] = counts.get(label, 0) + 1
            if mode is GenerationMode.POSITIVE:
                n = sum(counts.values())
                if isinstance(case.body, dict | list):
                    case.body = make_semantic(case.body, n)
                if case.query:
                    case.query = {k: v for k, v in case.query.items() if k not in DROPPED_QUERY}
            try:
                case.call_and_validate(headers=headers)
            except (Exception, BaseExceptionGroup) as exc:
                found = list(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else [exc]
                for failure in found:
                    title = str(failure).strip().splitlines()[0]
                    failures.setdefault((label, f"{type(failure).__name__}: {title}"), str(exc)[:3000])

        run()
    return {"counts": counts, "failures": failures, "seconds": time.perf_counter() - started}


def report(name: str, result: dict[str, Any]) -> str:
    lines = [f"{name}: {sum(result['counts'].values())} cases in {result['seconds']:.1f} s"]
    for (label, what), text in sorted(result["failures"].items()):
        lines.append(f"--- {label}: {what}" + ("" if os.environ.get("FUZZ_BRIEF") else f"\n{text}"))
    return "\n".join(lines)


def assert_clean(name: str, result: dict[str, Any], cases: int) -> None:
    total = sum(result["counts"].values())
    print(report(name, result))
    assert total >= cases, f"{name}: only {total} cases generated (wanted {cases}): {result['counts']}"
    assert len(result["counts"]) >= 2, result["counts"]
    assert not result["failures"], report(name, result)


def test_contacts_api_fuzz(database_factory: Callable[[Path], str], nats_server: NatsServer) -> None:
    from services.contacts.app import create_app
    from services.contacts.settings import ContactsSettings

    url = database_factory(ROOT / "services/contacts/alembic.ini")
    settings_ = ContactsSettings(database_url=url, nats_url=nats_server.url, log_level="WARNING", log_json=False)
    with lifespan_closed():
        result = fuzz(create_app(settings_))
    assert_clean("contacts", result, FUZZ_CASES)


@pytest.fixture(autouse=True)
def _quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "0")
