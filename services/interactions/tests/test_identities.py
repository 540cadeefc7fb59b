"""The copy of the identity directory against the database (SQLite and PostgreSQL): late events never overwrite newer
ones, merges re-point, erasures delete, and a contact learned from contacts' answer agrees with what the write
transaction knows of merges and erasures."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.identities import identity_digest, profile_identities, requested_identity
from services.interactions.directory import ContactLink
from services.interactions.identities import IdentityCopy
from services.interactions.models import KnownIdentity
from services.interactions.schemas import TouchpointCreate
from services.interactions.service import TouchpointService
from services.interactions.tests.conftest import touchpoint_factory

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ADA = ("email", "ada@example.com")


def later(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def holder(sessionmaker: async_sessionmaker[AsyncSession], copy: IdentityCopy) -> uuid.UUID | None:
    async with sessionmaker() as session:
        return (await copy.lookup(session=session, digests=[copy.digest(ADA)])).get(copy.digest(ADA))


async def test_an_older_event_delivered_late_never_overwrites_a_newer_one(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    copy = touchpoints.identities
    assert copy is not None
    first, second = uuid.uuid4(), uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        await copy.hold(session=session, contact_id=second, identities=[ADA], at=later(20))
        await copy.hold(session=session, contact_id=first, identities=[ADA], at=later(10))  # late: ignored
    assert await holder(sessionmaker, copy) == second
    async with sessionmaker() as session, session.begin():
        await copy.release(session=session, contact_id=second, identities=[ADA], at=later(15))  # older: ignored
    assert await holder(sessionmaker, copy) == second
    async with sessionmaker() as session, session.begin():
        await copy.release(session=session, contact_id=second, identities=[ADA], at=later(30))
        # The added event that came before the removal, delivered again after it: it cannot bring it back.
        await copy.hold(session=session, contact_id=second, identities=[ADA], at=later(20))
        await copy.release(session=session, contact_id=first, identities=[ADA], at=later(40))  # not first's
    assert await holder(sessionmaker, copy) is None
    async with sessionmaker() as session, session.begin():
        await copy.hold(session=session, contact_id=first, identities=[ADA], at=later(50))
        # A learned row never overwrites what an event wrote.
        await copy.learn(session=session, found={copy.digest(ADA): second})
    assert await holder(sessionmaker, copy) == first


async def test_merges_repoint_erasures_delete_and_nothing_stored_names_the_person(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    copy = touchpoints.identities
    assert copy is not None
    source, target = uuid.uuid4(), uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        await copy.hold(session=session, contact_id=source, identities=[ADA, ("phone", "+12025550100")], at=T0)
        await touchpoints.rekey(session=session, source_id=source, target_id=target)
    assert await holder(sessionmaker, copy) == target
    async with sessionmaker() as session, session.begin():
        # A late created event of the merged-away contact adds nothing (its fate is known).
        await copy.contact_created(session=session, contact={"id": str(source), "emails": ["late@example.com"]},
                                   at=later(5))  # fmt: skip
        rows = (await session.execute(sa.select(KnownIdentity))).scalars().all()
    assert {row.contact_id for row in rows} == {target} and len(rows) == 2
    assert all(len(row.digest) == 32 and b"example" not in row.digest for row in rows)
    async with sessionmaker() as session, session.begin():
        await touchpoints.redact_contact(session=session, contact_id=target, merged_ids=[source])
    async with sessionmaker() as session:
        assert (await session.scalar(sa.select(sa.func.count()).select_from(KnownIdentity))) == 0


async def test_a_learned_contact_merged_meanwhile_files_under_the_survivor_and_is_not_learned(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    # Contacts answered "ada@ is S"; before the touchpoint was written, S was merged into T and that merge applied here.
    copy = touchpoints.identities
    assert copy is not None
    source, target = uuid.uuid4(), uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        await touchpoints.rekey(session=session, source_id=source, target_id=target)
    item = TouchpointCreate.model_validate(touchpoint_factory(contact_id=None, contact={"email": ADA[1]}))
    link = ContactLink(source, source, learned=copy.digest(ADA))
    async with sessionmaker() as session, session.begin():
        (outcome,) = await touchpoints.store(session=session, prepared=[touchpoints.prepare(item=item, link=link)])
    assert outcome.status == 201 and outcome.row is not None
    assert isinstance(outcome.row, dict)
    assert (outcome.row["contact_id"], outcome.row["original_contact_id"]) == (target, source)
    assert await holder(sessionmaker, copy) is None  # not learned for a contact that is gone
    # A live one is learned, and the next touchpoint by the same identity is found in the write transaction.
    live = uuid.uuid4()
    async with sessionmaker() as session, session.begin():
        link = ContactLink(live, live, learned=copy.digest(ADA))
        await touchpoints.store(session=session, prepared=[touchpoints.prepare(item=item, link=link)])
    by_identity = touchpoints.prepare(item=item, link=None, identity=copy.digest(ADA))
    unknown = touchpoints.prepare(item=item, link=None, identity=copy.digest(("email", "bob@example.com")))
    async with sessionmaker() as session, session.begin():
        found, missing = await touchpoints.store(session=session, prepared=[by_identity, unknown])
    assert found.status == 201 and isinstance(found.row, dict) and found.row["contact_id"] == live
    assert missing.needs_contact and missing.row is None


async def test_learning_never_deadlocks_with_the_contacts_consumers_batch(
    sessionmaker: async_sessionmaker[AsyncSession], touchpoints: TouchpointService
) -> None:
    """The fault suite's 500: a batch of touchpoints for two new buyers learned both identities (in digest order)
    while the contacts consumer's batch of their two created events held them in event order, the other way round.
    PostgreSQL failed one transaction as a deadlock; the touchpoints are now filed without the learned hint."""
    copy = touchpoints.identities
    assert copy is not None
    buyers = {ADA: uuid.uuid4(), ("email", "bob@example.com"): uuid.uuid4()}
    lower, higher = sorted(buyers, key=copy.digest)
    item = TouchpointCreate.model_validate(touchpoint_factory(contact_id=None, contact={"email": ADA[1]}))
    learned = [
        touchpoints.prepare(
            item=item.model_copy(update={"external_id": f"x-{n}"}),
            link=ContactLink(contact, contact, learned=copy.digest(identity)),
        )
        for n, (identity, contact) in enumerate(buyers.items())
    ]

    async def write() -> list[int]:
        async with sessionmaker() as session, session.begin():
            return [o.status for o in await touchpoints.store(session=session, prepared=learned)]

    async with sessionmaker() as consumer:
        async with consumer.begin():
            await copy.hold(session=consumer, contact_id=buyers[higher], identities=[higher], at=later(1))
            if consumer.get_bind().dialect.name == "postgresql":
                writing = asyncio.create_task(write())
                await asyncio.sleep(0.5)  # the write transaction learned the lower digest and waits for the higher
                await copy.hold(session=consumer, contact_id=buyers[lower], identities=[lower], at=later(2))
            else:  # SQLite: one writer at a time, the write transaction comes after
                await copy.hold(session=consumer, contact_id=buyers[lower], identities=[lower], at=later(2))
                writing = None
        statuses = await asyncio.wait_for(writing, timeout=10) if writing is not None else await write()
    assert statuses == [201, 201]
    for identity, contact in buyers.items():
        async with sessionmaker() as session:
            assert (await copy.lookup(session=session, digests=[copy.digest(identity)])) == {
                copy.digest(identity): contact
            }


def test_identities_normalise_as_the_contacts_service_does() -> None:
    assert requested_identity({"email": " Ada@Example.COM "}) == ADA
    assert requested_identity({"phone": "+1 (202) 555-0100"}) == ("phone", "+12025550100")
    assert requested_identity({"phone": "202-555-0100"}) is None  # the region is the contacts service's setting
    assert requested_identity({"handle": {"channel": "twitter", "value": " @Ada "}}) == ("handle:twitter", "@ada")
    assert requested_identity({"external_id": {"source": "shop", "value": "C-1"}}) == ("external:shop", "C-1")
    assert requested_identity({"email": "not an email"}) is None
    assert profile_identities(emails=["ada@example.com"], handles={"twitter": "@Ada"}) == {
        ADA,
        ("handle:twitter", "@ada"),
    }
    assert identity_digest(b"k1", ADA) != identity_digest(b"k2", ADA)  # keyed: a guessed address needs the key
