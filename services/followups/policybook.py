"""Policies stored as versioned documents: the shipped set loaded on first start, changes through the API.

Each replica keeps a copy of the enabled policies for ``cache_s`` seconds (its own changes drop it at once),
so a change made through one replica reaches the others within that time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from servicekit.clock import Clock
from servicekit.problems import Conflict, NotFound
from services.followups.models import Policy, PolicyVersion
from services.followups.rules import PolicyChange, PolicyDocument

SHIPPED = Path(__file__).resolve().parent / "policies"


def shipped_policies(directory: Path = SHIPPED) -> list[PolicyDocument]:
    """The default policies (YAML files beside this module), validated."""
    return [
        PolicyDocument.model_validate(yaml.safe_load(path.read_text())) for path in sorted(directory.glob("*.yaml"))
    ]


class PolicyBook:
    def __init__(self, *, clock: Clock, cache_s: float = 2.0) -> None:
        self.clock = clock
        self.cache_s = cache_s
        self._cached: tuple[float, list[tuple[int, PolicyDocument]]] | None = None

    def forget(self) -> None:
        self._cached = None

    async def enabled(self, session: AsyncSession) -> list[tuple[int, PolicyDocument]]:
        """(version, document) of every enabled policy."""
        if self._cached is not None and time.monotonic() - self._cached[0] < self.cache_s:
            return self._cached[1]
        rows = (
            await session.execute(
                select(col(PolicyVersion.version), col(PolicyVersion.document))
                .join(
                    Policy,
                    (col(Policy.id) == col(PolicyVersion.id)) & (col(Policy.version) == col(PolicyVersion.version)),
                )
                .where(col(Policy.enabled).is_(True), col(Policy.deleted_at).is_(None))
                .order_by(col(Policy.id))
            )
        ).all()
        found = [(int(row.version), PolicyDocument.model_validate(row.document)) for row in rows]
        self._cached = (time.monotonic(), found)
        return found

    async def load_shipped(self, session: AsyncSession, documents: list[PolicyDocument] | None = None) -> int:
        """Store each shipped policy whose id was never stored (a deleted or edited one is left as staff left it)."""
        known = set((await session.scalars(select(col(Policy.id)))).all())
        added = 0
        for document in documents if documents is not None else shipped_policies():
            if document.id not in known:
                self._store(session, document, version=1, new=True)
                added += 1
        await session.flush()
        self.forget()
        return added

    def _store(self, session: AsyncSession, document: PolicyDocument, *, version: int, new: bool) -> None:
        now = self.clock.now()
        session.add(
            PolicyVersion(id=document.id, version=version, document=document.model_dump(mode="json"), created_at=now)
        )
        if new:
            session.add(Policy(id=document.id, version=version, enabled=document.enabled, updated_at=now))

    async def get(self, session: AsyncSession, policy_id: str, *, lock: bool = False) -> tuple[Policy, PolicyDocument]:
        policy = await session.get(Policy, policy_id, with_for_update=lock or None, populate_existing=lock)
        if policy is None or policy.deleted_at is not None:
            raise NotFound(f"No policy {policy_id}.")
        stored = await session.get(PolicyVersion, (policy.id, policy.version))
        assert stored is not None
        return policy, PolicyDocument.model_validate(stored.document)

    async def all(self, session: AsyncSession) -> list[tuple[Policy, dict[str, Any]]]:
        rows = (
            await session.execute(
                select(Policy, col(PolicyVersion.document))
                .join(
                    PolicyVersion,
                    (col(Policy.id) == col(PolicyVersion.id)) & (col(Policy.version) == col(PolicyVersion.version)),
                )
                .where(col(Policy.deleted_at).is_(None))
                .order_by(col(Policy.id))
            )
        ).all()
        return [(row[0], row[1]) for row in rows]

    async def create(self, session: AsyncSession, document: PolicyDocument) -> tuple[Policy, PolicyDocument]:
        existing = await session.get(Policy, document.id, with_for_update=True)
        if existing is not None and existing.deleted_at is None:
            raise Conflict(f"Policy {document.id} exists; PUT /v1/policies/{document.id} makes a new version.")
        if existing is not None:
            # A deleted id comes back as the next version: versions are never reused.
            existing.version += 1
            existing.enabled = document.enabled
            existing.deleted_at = None
            existing.updated_at = self.clock.now()
            self._store(session, document, version=existing.version, new=False)
            policy = existing
        else:
            self._store(session, document, version=1, new=True)
            await session.flush()
            policy = await session.get(Policy, document.id)  # type: ignore[assignment]
        await session.flush()
        self.forget()
        return policy, document

    async def replace(
        self, session: AsyncSession, policy_id: str, change: PolicyChange
    ) -> tuple[Policy, PolicyDocument]:
        policy, _ = await self.get(session, policy_id, lock=True)
        if change.id is not None and change.id != policy_id:
            raise Conflict(f"The document's id {change.id} is not the policy {policy_id} in the path.")
        enabled = policy.enabled if change.enabled is None else change.enabled
        document = PolicyDocument.model_validate(
            {**change.model_dump(mode="json"), "id": policy_id, "enabled": enabled}
        )
        policy.version += 1
        policy.enabled = enabled
        policy.updated_at = self.clock.now()
        self._store(session, document, version=policy.version, new=False)
        await session.flush()
        self.forget()
        return policy, document

    async def switch(self, session: AsyncSession, policy_id: str, *, enabled: bool) -> tuple[Policy, PolicyDocument]:
        policy, document = await self.get(session, policy_id, lock=True)
        if policy.enabled != enabled:
            policy.enabled = enabled
            policy.updated_at = self.clock.now()
            await session.flush()
        self.forget()
        return policy, document

    async def delete(self, session: AsyncSession, policy_id: str) -> None:
        """Soft delete: it makes nothing more; its versions stay (follow-ups name the version that made them)."""
        policy, _ = await self.get(session, policy_id, lock=True)
        policy.deleted_at = self.clock.now()
        policy.enabled = False
        policy.updated_at = self.clock.now()
        await session.flush()
        self.forget()
