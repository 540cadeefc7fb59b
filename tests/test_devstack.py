"""`make up` as a new user runs it: the whole stack in the foreground, Ctrl-C stops every process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from servicekit.devstack import SERVICES, Stack
from servicekit.testing.ports import free_port


def test_make_up_serves_every_service_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    ports = {spec.prefix + "PORT": str(free_port()) for spec in SERVICES}
    metrics_ports = {spec.prefix + "METRICS_PORT": str(free_port()) for spec in SERVICES}
    env = {
        **os.environ, **ports, **metrics_ports, "TOUCHPOINT_VAR_DIR": str(tmp_path / "var"),
        "TOUCHPOINT_NATS_PORT": str(free_port()), "TOUCHPOINT_NATS_MONITOR_PORT": str(free_port()),
        # Two gateway processes: their metrics are summed by their supervisor on the one metrics port.
        "GATEWAY_WORKERS": "2",
        # The sampled metrics (consumer lag, outbox age, pool) within the test's patience.
        **{spec.prefix + "METRICS_SAMPLE_S": "0.2" for spec in SERVICES},
    }  # fmt: skip
    env.pop("TOUCHPOINT_ADMIN_KEY", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "servicekit.devstack"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    banner: list[str] = []
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, f"make up exited early:\n{''.join(banner[-40:])}"
            banner.append(line)
            if "Ctrl-C stops everything" in line:
                break
        for _ in range(len(SERVICES) + 4):
            banner.append(process.stdout.readline())
        text = "".join(banner)
        assert "admin key" in text and "nats://127.0.0.1:" + env["TOUCHPOINT_NATS_PORT"] in text
        installed = [spec for spec in SERVICES if spec.installed]
        assert [s.name for s in installed][:1] == ["contacts"]
        for spec in installed:
            url = f"http://127.0.0.1:{ports[spec.prefix + 'PORT']}"
            assert url in text
            ready = _eventually_ready(url)
            assert ready.status_code == 200, (spec.name, ready.text)
        contacts = f"http://127.0.0.1:{ports['CONTACTS_PORT']}"
        created = httpx.post(f"{contacts}/v1/contacts", json={"name": "Ada", "emails": ["ada@example.com"]})
        assert created.status_code == 201
        assert (tmp_path / "var" / "contacts.db").exists()
        assert (tmp_path / "var" / "nats" / "jetstream").exists()
        for spec in installed:
            # Metrics on their own port (in the banner), none on the API's.
            url = f"http://127.0.0.1:{ports[spec.prefix + 'PORT']}"
            metrics_url = f"http://127.0.0.1:{metrics_ports[spec.prefix + 'METRICS_PORT']}/metrics"
            assert metrics_url in text, spec.name
            assert httpx.get(f"{url}/metrics").status_code == 404, spec.name
            scraped = httpx.get(metrics_url)
            assert scraped.status_code == 200 and 'route="/readyz",status="200"' in scraped.text, spec.name
        gateway = f"http://127.0.0.1:{ports['GATEWAY_PORT']}"
        for _ in range(20):
            assert httpx.get(f"{gateway}/healthz").status_code == 200  # a new connection each: both workers
        summed = httpx.get(f"http://127.0.0.1:{metrics_ports['GATEWAY_METRICS_PORT']}/metrics").text
        healthz = re.search(r'http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)', summed)
        assert healthz is not None and float(healthz.group(1)) >= 20, "every worker's requests, summed"
        _every_dashboard_metric_is_served(
            {spec.name: f"http://127.0.0.1:{metrics_ports[spec.prefix + 'METRICS_PORT']}/metrics" for spec in installed}
        )
        children = psutil.Process(process.pid).children(recursive=True)
        assert len(children) >= len(installed) + 1  # every service and nats-server
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output[-2000:]
    assert "stopped." in output
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child


def _eventually_ready(url: str, timeout: float = 30.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(f"{url}/readyz", timeout=10)
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_the_stack_can_restart_a_service_and_keeps_its_data(tmp_path: Path) -> None:
    env = {"TOUCHPOINT_NATS_PORT": str(free_port()), "TOUCHPOINT_NATS_MONITOR_PORT": str(free_port()),
           **{spec.prefix + "PORT": str(free_port()) for spec in SERVICES}}  # fmt: skip
    stack = Stack.from_environment(tmp_path, env)
    stack.services = {"contacts": stack.services["contacts"]}
    try:
        stack.start()
        contacts = stack.services["contacts"]
        created = httpx.post(f"{contacts.url}/v1/contacts", json={"emails": ["grace@example.com"]}).json()
        contacts.kill()
        contacts.start()
        again = httpx.get(f"{contacts.url}/v1/contacts/{created['id']}")
        assert again.status_code == 200 and again.json()["emails"] == ["grace@example.com"]
    finally:
        stack.stop()


def _every_dashboard_metric_is_served(metrics_urls: dict[str, str], timeout: float = 60.0) -> None:
    """What the running services serve covers every metric the dashboard and the alert rules query (the contact
    created above has been consumed by then); followups_overdue has a series only while a follow-up is overdue
    (tests/test_deploy_monitoring.py finds it in the registry)."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.test_deploy_monitoring import alert_rules, metric_names, panel_exprs

    wanted = {name for exprs in panel_exprs().values() for e in exprs for name in metric_names(e)}
    wanted |= {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    wanted -= {"up", "followups_overdue"}
    deadline = time.monotonic() + timeout
    while True:
        served: set[str] = set()
        unsampled = []
        for name, url in metrics_urls.items():
            text = httpx.get(url, timeout=10).text
            samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
            served |= {sample.name for sample in samples}
            # Each service samples its own outbox and pool.
            if not any(s.name == "outbox_oldest_unsent_age_seconds" and s.labels == {"service": name} for s in samples):
                unsampled.append(name)
        if wanted <= served and not unsampled:
            return
        assert time.monotonic() < deadline, f"not served: {sorted(wanted - served)}; unsampled: {unsampled}"
        time.sleep(0.5)
