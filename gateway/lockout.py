"""Sign-in lockout: after repeated wrong passwords an account is refused for a while.

One rule for every way in: ``POST /api/v1/auth/login`` applies it, and the console signs in through that route.
Kept in the gateway process (each replica counts on its own; a client spread over replicas gets at most
``max_failures`` times the replicas tries per window). Keyed by the lower-cased email, so guessing one staff
member's password from many addresses still stops."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class SignInGuard:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_s: float = 15 * 60,
        lockout_s: float = 15 * 60,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.now = now
        self._failures: dict[str, list[float]] = {}
        self._locked_until: dict[str, float] = {}

    @staticmethod
    def _key(email: str) -> str:
        return email.strip().lower()

    def locked_for(self, email: str) -> float:
        """Seconds this account stays locked (0: not locked)."""
        until = self._locked_until.get(self._key(email), 0.0)
        return max(0.0, until - self.now())

    def failed(self, email: str) -> None:
        key, now = self._key(email), self.now()
        recent = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        recent.append(now)
        self._failures[key] = recent
        if len(recent) >= self.max_failures:
            self._locked_until[key] = now + self.lockout_s
            self._failures.pop(key, None)
        if len(self._failures) > 100_000:  # bounded memory under a spray of made-up emails
            self._failures.clear()

    def succeeded(self, email: str) -> None:
        key = self._key(email)
        self._failures.pop(key, None)
        self._locked_until.pop(key, None)


def sign_in_guard(app: Any) -> SignInGuard:
    """The guard of this gateway process (one per app, shared by the API and the console)."""
    guard: SignInGuard | None = getattr(app.state, "sign_in_guard", None)
    if guard is None:
        guard = app.state.sign_in_guard = SignInGuard()
    return guard
