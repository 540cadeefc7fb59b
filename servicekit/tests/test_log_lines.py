"""A real service's log output under uvicorn, JSON logging on: every line (uvicorn's own start-up and shut-down
lines too) is a JSON object naming the service, and the lines of a request sent with a traceparent carry its
trace id, even though each request clears the logging context."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from servicekit.processes import spawn
from servicekit.testing.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_every_line_of_a_served_request_is_json_with_the_service_and_the_trace_id(
    database_factory: Callable[[Path], str],
) -> None:
    port = free_port()
    env = {**os.environ, "CONTACTS_DATABASE_URL": database_factory(ROOT / "services/contacts/alembic.ini"),
           "CONTACTS_NATS_URL": f"nats://127.0.0.1:{free_port()}",  # nothing there: its warnings are lines too
           "CONTACTS_LOG_JSON": "true", "CONTACTS_LOG_LEVEL": "INFO"}  # fmt: skip
    for name in [n for n in env if n.startswith("OTEL_")]:
        del env[name]  # no exporter: the context must travel without one
    process = spawn([sys.executable, "-m", "uvicorn", "services.contacts.app:create_app", "--factory",
                     "--host", "127.0.0.1", "--port", str(port)],
                    cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_until_up(client, process)
            listed = client.get("/v1/contacts", params={"limit": 1},
                                      headers={"traceparent": TRACEPARENT, "x-request-id": "req-log-1"})  # fmt: skip
            assert listed.status_code == 200, listed.text
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    lines = [line for line in output.decode().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line, or this raises on the first plain-text one
    assert records and all(record.get("service") == "contacts" for record in records), lines
    assert any(record.get("logger", "").startswith("uvicorn") for record in records), lines
    (request,) = [r for r in records if r.get("event") == "request" and r.get("request_id") == "req-log-1"]
    assert request["trace_id"] == TRACEPARENT[3:35] and request["span_id"] == TRACEPARENT[36:52]
    assert request["route"] == "/v1/contacts" and request["status"] == 200


def wait_until_up(client: httpx.Client, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """A process starting has no event to await: its health route is polled until it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the service exited"
        try:
            if client.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the service did not start")
