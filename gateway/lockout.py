"""Sign-in lockout: after repeated wrong passwords an account is refused for a while.

One rule for every way in: ``POST /api/v1/auth/login`` applies it, and the console signs in through that route.
Kept in the gateway process (each replica counts on its own; a client spread over replicas gets at most
``max_failures`` times the replicas tries per window). Keyed by the lower-cased email, so guessing one staff
member's password from many addresses still stops.

Memory is bounded without forgetting an account under attack: failures against staff accounts that exist are
kept apart (as many entries as there are staff, at most); made-up emails, which anyone can invent by the
million, share a bounded table that, when full, sheds the least-attacked first. (One table cleared at 100,000
entries let 100,001 failures on made-up emails reset a real account's count.) A made-up email still locks like
a real one, so the answers do not tell which accounts exist."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_UNKNOWN_EMAILS = 10_000


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class SignInGuard:
    def __init__(
        self,
        *,
        max_failures: int = 5,
        window_s: float = 15 * 60,
        lockout_s: float = 15 * 60,
        max_unknown: int = MAX_UNKNOWN_EMAILS,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_unknown = max_unknown
        self.now = now
        self._accounts: dict[str, _Record] = {}
        self._unknown: dict[str, _Record] = {}

    @staticmethod
    def _key(email: str) -> str:
        return email.strip().lower()

    def __len__(self) -> int:
        return len(self._accounts) + len(self._unknown)

    def locked_for(self, email: str) -> float:
        """Seconds this account stays locked (0: not locked)."""
        key = self._key(email)
        record = self._accounts.get(key) or self._unknown.get(key)
        return max(0.0, record.locked_until - self.now()) if record else 0.0

    def failed(self, email: str, *, account_exists: bool = True) -> None:
        """A wrong password for ``email``; ``account_exists``: a staff user has this email."""
        key, now = self._key(email), self.now()
        table = self._accounts if account_exists else self._unknown
        record = table.get(key)
        if record is None:
            record = table[key] = _Record()
        record.failures = [t for t in record.failures if now - t < self.window_s]
        record.failures.append(now)
        if len(record.failures) >= self.max_failures:
            record.locked_until = now + self.lockout_s
            record.failures = []
        if not account_exists and len(self._unknown) > self.max_unknown:
            self._shed(now)

    def succeeded(self, email: str) -> None:
        key = self._key(email)
        self._accounts.pop(key, None)
        self._unknown.pop(key, None)

    def _shed(self, now: float) -> None:
        """Brings the made-up emails to 90% of their bound: first the ones with nothing left to remember, then the
        least attacked (not locked before locked, fewer recent failures first, then the oldest)."""
        for key, record in list(self._unknown.items()):
            if record.locked_until <= now and all(now - t >= self.window_s for t in record.failures):
                del self._unknown[key]
        surplus = len(self._unknown) - int(self.max_unknown * 0.9)
        if surplus <= 0:
            return

        def attack(item: tuple[str, _Record]) -> tuple[bool, int, float]:
            record = item[1]
            return (record.locked_until > now, len(record.failures), max(record.failures, default=0.0))

        for key, _record in sorted(self._unknown.items(), key=attack)[:surplus]:
            del self._unknown[key]


def sign_in_guard(app: Any) -> SignInGuard:
    """The guard of this gateway process (one per app, shared by the API and the console)."""
    guard: SignInGuard | None = getattr(app.state, "sign_in_guard", None)
    if guard is None:
        guard = app.state.sign_in_guard = SignInGuard()
    return guard
