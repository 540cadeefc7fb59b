"""The rules of contacts: identities are unique among live contacts, merge and erase keep history
consistent, every change writes its event to the outbox in the same transaction."""

from __future__ import annotations

import json
import uuid
from typing import Any

import phonenumbers
from pydantic import ValidationError
from sqlalchemy import delete, func, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from servicekit import cursors
from servicekit.catalogue.contacts import CONTACT_CREATED, CONTACT_ERASED, CONTACT_MERGED, CONTACT_UPDATED
from servicekit.clock import Clock
from servicekit.erasure import checkpoint_after_commit
from servicekit.identities import profile_identities
from servicekit.outbox import Outbox
from servicekit.problems import (
    Conflict,
    Gone,
    NotFound,
    PreconditionFailed,
    ProblemError,
    Unprocessable,
    problem_body,
    validation_errors,
)
from servicekit.purge import purge_request
from services.contacts import events, search
from services.contacts.models import Contact, Identity, SearchTerm, outbox_table
from services.contacts.schemas import (
    ContactCreate,
    ContactExport,
    ContactRead,
    ContactUpdate,
    IdentityRead,
    ResolveManyItem,
    ResolveRequest,
)
from services.contacts.staff import owner_problem

MAX_PAGE = 200
PROFILE_FIELDS = (
    "name", "company", "emails", "phones", "handles", "external_ids", "tier", "preferred_channel", "language",
    "timezone", "tags", "attributes", "consent", "stage", "owner",
)  # fmt: skip


class IdentityTaken(Conflict):
    slug, title = "identity-taken", "Identity already held by another contact"


class MergedAway(ProblemError):
    """The contact was merged into another: the API answers 308 to the target."""

    status, slug, title = 308, "merged", "Contact merged"

    def __init__(self, contact_id: uuid.UUID, target_id: uuid.UUID) -> None:
        super().__init__(
            f"Contact {contact_id} was merged into {target_id}.",
            headers={"Location": f"/v1/contacts/{target_id}"},
            merged_into=str(target_id),
            contact_id=str(contact_id),
        )
        self.target_id = target_id


# --- normalisation -------------------------------------------------------------------------------------------


def normalise_phone(raw: str, region: str) -> str:
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        raise Unprocessable(f"{raw!r} is not a phone number", field="phones") from None
    if not phonenumbers.is_valid_number(number):
        raise Unprocessable(f"{raw!r} is not a valid phone number", field="phones")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def identities_of(contact: Contact) -> set[tuple[str, str]]:
    return profile_identities(
        emails=contact.emails, phones=contact.phones, handles=contact.handles, external_ids=contact.external_ids
    )


def search_terms_of(contact: Contact) -> set[tuple[str, str]]:
    terms: set[tuple[str, str]] = set()
    terms |= {("q", term) for term in search.name_terms(contact.name, contact.company)}
    terms |= {("name", word) for word in search.name_words(contact.name, contact.company)}
    terms |= {("q", email) for email in contact.emails}
    terms |= {("q", term) for phone in contact.phones for term in search.phone_terms(phone)}
    terms |= {("national", term) for phone in contact.phones if (term := search.national_term(phone))}
    terms |= {("tag", tag) for tag in contact.tags}
    return terms


def to_read(contact: Contact) -> ContactRead:
    return ContactRead.model_validate(contact)


def resolve_many_item(index: int, outcome: tuple[uuid.UUID, bool] | ProblemError) -> ResolveManyItem:
    if isinstance(outcome, ProblemError):
        body = problem_body(outcome.status, title=outcome.title, detail=outcome.detail, slug=outcome.slug,
                            **outcome.extensions)  # fmt: skip
        return ResolveManyItem(index=index, status=outcome.status, problem=body)
    contact_id, created = outcome
    return ResolveManyItem(index=index, status=201 if created else 200, id=contact_id)


def etag(contact: Contact) -> str:
    return f'"{contact.id}-v{contact.version}"'


# --- reading -------------------------------------------------------------------------------------------------


async def get_contact(
    *, session: AsyncSession, contact_id: uuid.UUID, follow_merges: bool = False, lock: bool = False
) -> Contact:
    """A live contact; a merged one raises ``MergedAway`` (or is followed), an erased one ``Gone``.
    ``lock`` takes the row lock on PostgreSQL (SQLite transactions are already serialised)."""
    contact = await session.get(Contact, contact_id, with_for_update=lock or None, populate_existing=lock)
    if contact is None:
        raise NotFound(f"No contact {contact_id}.")
    if contact.status == "merged" and contact.merged_into is not None:
        if follow_merges:
            return await get_contact(session=session, contact_id=contact.merged_into)
        raise MergedAway(contact.id, contact.merged_into)
    if contact.status == "erased":
        raise Gone(
            f"Contact {contact_id} was erased.", erased_at=contact.erased_at.isoformat() if contact.erased_at else None
        )
    return contact


def encode_cursor(contact_id: uuid.UUID) -> str:
    return cursors.encode({"before": str(contact_id)})


def decode_cursor(cursor: str) -> uuid.UUID:
    return cursors.decode(cursor, lambda document: uuid.UUID(document["before"]))


async def list_contacts(
    *,
    session: AsyncSession,
    q: str | None = None,
    tag: str | None = None,
    tier: str | None = None,
    stage: str | None = None,
    owner: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
    region: str = "US",
    similarity: float = search.DEFAULT_SIMILARITY,
) -> tuple[list[Contact], str | None]:
    """Newest first, keyset on the time-ordered id: stable while contacts are added. With ``q``, a search
    (services/contacts/search.py): exact matches first, then prefix matches, then matches with a typo."""
    conditions: list[Any] = []
    if tag:
        conditions.append(
            col(Contact.id).in_(
                select(col(SearchTerm.contact_id)).where(
                    col(SearchTerm.field) == "tag", col(SearchTerm.term) == tag.strip().lower()
                )
            )
        )
    if tier:
        conditions.append(col(Contact.tier) == tier)
    if stage:
        conditions.append(col(Contact.stage) == stage)
    if owner:
        conditions.append(col(Contact.owner) == owner)
    if q and q.strip():
        return await search.search_contacts(
            session=session,
            q=q,
            region=region,
            similarity=similarity,
            filters=search.Filters(tuple(conditions)),
            limit=limit,
            cursor=cursor,
        )
    before = decode_cursor(cursor) if cursor else None
    query = select(Contact).where(col(Contact.status) == "active", *conditions)
    if before is not None:
        query = query.where(col(Contact.id) < before)
    rows = list((await session.scalars(query.order_by(col(Contact.id).desc()).limit(limit + 1))).all())
    next_cursor = encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
    return rows[:limit], next_cursor


# --- writing -------------------------------------------------------------------------------------------------


class ContactService:
    """Contact rules bound to this service's clock, outbox and phone region."""

    def __init__(
        self,
        *,
        clock: Clock,
        outbox: Outbox,
        default_region: str,
        search_similarity: float = search.DEFAULT_SIMILARITY,
    ) -> None:
        self.clock = clock
        self.outbox = outbox
        self.default_region = default_region
        self.search_similarity = search_similarity

    async def _emit(self, session: AsyncSession, event_type: str, contact_id: uuid.UUID, data: dict[str, Any]) -> None:
        event = events.contact_event(event_type, contact_id, data, self.clock.now())
        await self.outbox.add(session, event, subject=events.subject_for(event_type, contact_id))

    def _apply_profile(self, contact: Contact, fields: dict[str, Any]) -> None:
        for name, value in fields.items():
            if name == "phones":
                value = list(dict.fromkeys(normalise_phone(p, self.default_region) for p in value))
            elif name == "emails":
                value = list(dict.fromkeys(value))
            elif name == "consent":
                value = {str(k): v for k, v in value.items()}
            setattr(contact, name, value)

    async def _claim_identities(self, session: AsyncSession, contact: Contact, previous: set[tuple[str, str]]) -> None:
        """Make this contact's identity rows match its profile; 409 if another live contact holds one."""
        wanted = identities_of(contact)
        added = wanted - previous
        removed = previous - wanted
        for kind, value in removed:
            await session.execute(
                delete(Identity).where(
                    col(Identity.kind) == kind,
                    col(Identity.value) == value,
                    col(Identity.contact_id) == contact.id,
                )
            )
        if not added:
            return
        conditions = [(col(Identity.kind) == kind) & (col(Identity.value) == value) for kind, value in added]
        holder = (await session.execute(select(Identity).where(or_(*conditions)).limit(1))).scalars().first()
        if holder is not None and holder.contact_id != contact.id:
            raise IdentityTaken(
                f"{holder.kind.split(':')[0]} {holder.value!r} belongs to contact {holder.contact_id}.",
                contact_id=str(holder.contact_id),
                identity={"kind": holder.kind, "value": holder.value},
            )
        session.add_all(Identity(kind=kind, value=value, contact_id=contact.id) for kind, value in added)
        try:
            await session.flush()
        except IntegrityError:
            # A concurrent writer took it between our check and our insert. The caller's transaction (or
            # resolve's savepoint) is rolled back by raising.
            raise IdentityTaken("An identity of this contact was just taken by another contact.") from None

    async def _index(self, session: AsyncSession, contact: Contact) -> None:
        terms = [(contact.id, f, t) for f, t in search_terms_of(contact)]
        await search.replace_terms(session, [contact.id], terms)

    async def create(self, *, session: AsyncSession, data: ContactCreate) -> Contact:
        now = self.clock.now()
        contact = Contact(created_at=now, updated_at=now)
        self._apply_profile(contact, data.model_dump())
        session.add(contact)
        await session.flush()
        await self._claim_identities(session, contact, set())
        await self._index(session, contact)
        await self._emit(session, CONTACT_CREATED, contact.id, {"contact": to_read(contact).model_dump(mode="json")})
        return contact

    async def update(
        self, *, session: AsyncSession, contact_id: uuid.UUID, patch: ContactUpdate, if_match: str | None
    ) -> Contact:
        contact = await get_contact(session=session, contact_id=contact_id, lock=True)
        if if_match is not None and if_match.strip() not in ("*", etag(contact)):
            raise PreconditionFailed(
                "The contact changed since you read it; GET it again and re-apply your change.",
                current_etag=etag(contact),
            )
        before = to_read(contact).model_dump(mode="json")
        previous_identities = identities_of(contact)
        merged = _merge_patch(contact, patch)
        # Re-validate the whole result as a contact, so a patch cannot leave an invalid one.
        checked = ContactCreate.model_validate(merged)
        self._apply_profile(contact, {k: getattr(checked, k) for k in patch.model_fields_set})
        after = to_read(contact).model_dump(mode="json")
        changed = {k: after[k] for k in PROFILE_FIELDS if after[k] != before[k]}
        if not changed:
            return contact
        await self._claim_identities(session, contact, previous_identities)
        contact.version += 1
        contact.updated_at = self.clock.now()
        await self._index(session, contact)
        await self._emit(
            session,
            CONTACT_UPDATED,
            contact.id,
            {
                "contact_id": str(contact.id),
                "version": contact.version,
                "changed": changed,
                "previous": {k: before[k] for k in changed},
            },
        )
        return contact

    async def resolve(self, *, session: AsyncSession, request: ResolveRequest) -> tuple[Contact, bool]:
        """The live contact holding this identity, or a new one with it. Returns (contact, created)."""
        kind, value, profile = self._identity_of_request(request)
        found = await self._holder(session, kind, value)
        if found is not None:
            return found, False
        try:
            async with session.begin_nested():
                contact = await self.create(session=session, data=ContactCreate.model_validate(profile))
            return contact, True
        except IdentityTaken:
            # Two resolves raced; the other one's contact is committed by now.
            found = await self._holder(session, kind, value)
            if found is None:
                raise
            return found, False

    async def resolve_many(
        self, *, session: AsyncSession, items: list[dict[str, Any]]
    ) -> list[tuple[uuid.UUID, bool] | ProblemError]:
        """Each item resolved as ``resolve`` does, in the caller's transaction: (contact id, created) or the problem
        that item alone meets (invalid, an identity in ``create`` held by another contact, an owner who is not an
        active staff handle). Identities already held are found in one query; each new contact is made in its own
        savepoint, so one refused item leaves the others as they are. The same identity twice resolves to one
        contact (the second finds what the first made)."""
        results: list[tuple[uuid.UUID, bool] | ProblemError | None] = [None] * len(items)
        wanted: dict[int, tuple[ResolveRequest, str, str]] = {}
        for index, raw in enumerate(items):
            try:
                request = ResolveRequest.model_validate(raw)
                kind, value, _ = self._identity_of_request(request)
            except ValidationError as exc:
                results[index] = Unprocessable(
                    "The item does not match the schema of a resolve request.",
                    errors=validation_errors(exc),
                )
                continue
            except ProblemError as exc:
                results[index] = exc
                continue
            wanted[index] = (request, kind, value)
        keys = {(kind, value) for _, kind, value in wanted.values()}
        held: dict[tuple[str, str], uuid.UUID] = {}
        if keys:
            rows = await session.execute(
                select(col(Identity.kind), col(Identity.value), col(Identity.contact_id)).where(
                    tuple_(col(Identity.kind), col(Identity.value)).in_(sorted(keys))
                )
            )
            held = {(row.kind, row.value): row.contact_id for row in rows}
        for index, (request, kind, value) in wanted.items():
            if (kind, value) in held:
                results[index] = (held[(kind, value)], False)
                continue
            try:
                owner = request.create.owner if request.create is not None else None
                if owner is not None and (why := await owner_problem(session=session, handle=owner)) is not None:
                    raise Unprocessable(why, field="create.owner")
                contact, created = await self.resolve(session=session, request=request)
            except ValidationError as exc:
                results[index] = Unprocessable(
                    "The contact to create would be invalid.",
                    errors=validation_errors(exc),
                )
                continue
            except ProblemError as exc:
                results[index] = exc
                continue
            held[(kind, value)] = contact.id
            results[index] = (contact.id, created)
        return [result for result in results if result is not None]

    def _identity_of_request(self, request: ResolveRequest) -> tuple[str, str, dict[str, Any]]:
        profile = request.create.model_dump(exclude_unset=True) if request.create else {}
        if request.email is not None:
            profile["emails"] = list(dict.fromkeys([request.email, *profile.get("emails", [])]))
            return "email", request.email, profile
        if request.phone is not None:
            phone = normalise_phone(request.phone, self.default_region)
            profile["phones"] = list(dict.fromkeys([phone, *profile.get("phones", [])]))
            return "phone", phone, profile
        if request.handle is not None:
            profile["handles"] = {**profile.get("handles", {}), request.handle.channel: request.handle.value}
            return f"handle:{request.handle.channel}", request.handle.value.lower(), profile
        assert request.external_id is not None
        source, ext = request.external_id.source, request.external_id.value
        profile["external_ids"] = {**profile.get("external_ids", {}), source: ext}
        return f"external:{source}", ext, profile

    async def _holder(self, session: AsyncSession, kind: str, value: str) -> Contact | None:
        identity = await session.get(Identity, (kind, value))
        if identity is None:
            return None
        return await session.get(Contact, identity.contact_id, populate_existing=True)

    async def merge(self, *, session: AsyncSession, target_id: uuid.UUID, source_id: uuid.UUID) -> Contact:
        if target_id == source_id:
            raise Unprocessable("A contact cannot be merged into itself.")
        source = await session.get(Contact, source_id, with_for_update=True)
        if source is None:
            raise NotFound(f"No contact {source_id}.")
        if source.status != "active":
            raise Unprocessable(
                f"Contact {source_id} is {source.status}; only a live contact can be merged.",
                merged_into=str(source.merged_into) if source.merged_into else None,
            )
        target = await session.get(Contact, target_id, with_for_update=True)
        if target is None:
            raise NotFound(f"No contact {target_id}.")
        if target.status == "merged" and target.merged_into is not None:
            final = await get_contact(session=session, contact_id=target.merged_into, follow_merges=True)
            if final.id == source_id:
                raise Unprocessable("This merge would make a cycle: the target was merged into the source.")
            target = final
        elif target.status == "erased":
            raise Gone(f"Contact {target_id} was erased.")
        now = self.clock.now()
        before = to_read(target).model_dump(mode="json")
        # The source's identities move first, so the target's profile can claim them.
        await session.execute(
            update(Identity).where(col(Identity.contact_id) == source.id).values(contact_id=target.id)
        )
        target.emails = list(dict.fromkeys([*target.emails, *source.emails]))
        target.phones = list(dict.fromkeys([*target.phones, *source.phones]))
        target.handles = {**source.handles, **target.handles}
        target.external_ids = {**source.external_ids, **target.external_ids}
        target.tags = list(dict.fromkeys([*target.tags, *source.tags]))
        target.attributes = {**source.attributes, **target.attributes}
        # Consent: an opt-out on either record wins; a customer who said no must not be contacted.
        consent = {**source.consent, **target.consent}
        consent.update({ch: False for ch, ok in source.consent.items() if ok is False})
        target.consent = consent
        for name in ("name", "company", "preferred_channel", "language", "timezone", "owner"):
            if getattr(target, name) is None:
                setattr(target, name, getattr(source, name))
        if source.tier == "premium":
            target.tier = "premium"
        target.version += 1
        target.updated_at = now
        await self._claim_identities(session, target, identities_of(target))
        source.status = "merged"
        source.merged_into = target.id
        source.updated_at = now
        source.version += 1
        # Flatten chains: whatever pointed at the source now points at the target.
        await session.execute(
            update(Contact).where(col(Contact.merged_into) == source.id).values(merged_into=target.id)
        )
        await search.replace_terms(session, [source.id], [])
        await self._index(session, target)
        after = to_read(target).model_dump(mode="json")
        await self._emit(
            session,
            CONTACT_MERGED,
            target.id,
            {
                "source_id": str(source.id),
                "target_id": str(target.id),
                "contact": after,
                "changed": [k for k in PROFILE_FIELDS if after[k] != before[k]],
            },
        )
        return target

    async def erase(self, *, session: AsyncSession, contact_id: uuid.UUID) -> Contact:
        """GDPR erasure: personal data is gone, the contact's and that of every contact merged into it
        (transitively: each was the same person); tombstones keep the ids, tier and stage."""
        contact = await session.get(Contact, contact_id, with_for_update=True)
        if contact is None:
            raise NotFound(f"No contact {contact_id}.")
        already = contact.status == "erased"
        now = self.clock.now()
        merged = await self._merged_into(session, contact.id)
        for member in [contact, *merged]:
            if member.status == "erased" or member.erased_at is not None:
                continue
            for name in ("name", "company", "preferred_channel", "language", "timezone", "owner"):
                setattr(member, name, None)
            member.emails, member.phones, member.tags = [], [], []
            member.handles, member.external_ids, member.attributes, member.consent = {}, {}, {}, {}
            member.erased_at = now
            member.updated_at = now
            member.version += 1
        contact.status = "erased"
        family = [contact.id, *(m.id for m in merged)]
        await session.execute(delete(Identity).where(col(Identity.contact_id).in_(family)))
        await search.replace_terms(session, family, [])
        for member_id in family:
            await self.outbox.redact_events(
                session, subject_like=f"crm.contacts.%.{member_id}", redact=redact_event_data
            )
        checkpoint_after_commit(session)
        # Once every consumer has the erasure, the contact's messages (and its merged duplicates') leave the bus;
        # a repeated erase asks again (for an erasure made before the bus was purged, say).
        await self.outbox.add_serialized(session, [purge_request("contacts", [str(i) for i in family], now)])
        if already:
            return contact  # a repeated erase sweeps what an older version left, and says nothing new
        await self._emit(
            session,
            CONTACT_ERASED,
            contact.id,
            {
                "contact_id": str(contact.id),
                "erased_at": now.isoformat(),
                "merged_ids": [str(ident) for ident in family[1:]],
            },
        )
        return contact

    async def _merged_into(self, session: AsyncSession, contact_id: uuid.UUID) -> list[Contact]:
        """Every contact merged into this one, directly or through a chain (merges flatten chains, but
        rows written before that rule, or by a concurrent merge, may still point at an intermediate)."""
        found: dict[uuid.UUID, Contact] = {}
        frontier = {contact_id}
        while frontier:
            rows = (
                await session.scalars(select(Contact).where(col(Contact.merged_into).in_(frontier)).with_for_update())
            ).all()
            frontier = {row.id for row in rows if row.id not in found and row.id != contact_id}
            found.update({row.id: row for row in rows if row.id in frontier})
        return list(found.values())

    async def export(self, *, session: AsyncSession, contact_id: uuid.UUID) -> ContactExport:
        contact = await session.get(Contact, contact_id)
        if contact is None:
            raise NotFound(f"No contact {contact_id}.")
        identities = (await session.scalars(select(Identity).where(col(Identity.contact_id) == contact.id))).all()
        merged_from = (
            await session.scalars(select(col(Contact.id)).where(col(Contact.merged_into) == contact.id))
        ).all()
        rows = (
            await session.execute(
                select(outbox_table.c.payload)
                .where(outbox_table.c.subject.like(f"crm.contacts.%.{contact.id}"))
                .order_by(outbox_table.c.seq)
            )
        ).all()
        return ContactExport(
            contact=to_read(contact),
            identities=[IdentityRead(kind=i.kind, value=i.value) for i in identities],
            merged_from=list(merged_from),
            events=[json.loads(row.payload) for row in rows],
            exported_at=self.clock.now(),
        )


# Fields that identify or describe the person; ids, tier, stage, status, consent and versions are kept.
PERSONAL_FIELDS = frozenset(
    {
        "name",
        "company",
        "emails",
        "phones",
        "handles",
        "external_ids",
        "attributes",
        "owner",
        "tags",
        "language",
        "timezone",
        "preferred_channel",
    }
)


def redact_event_data(data: dict[str, Any]) -> dict[str, Any]:
    """The event's data without personal fields: consumers still get every id they act on."""
    redacted: dict[str, Any] = {}
    for key, value in data.items():
        if (key == "contact" and isinstance(value, dict)) or (
            key in ("changed", "previous") and isinstance(value, dict)
        ):
            redacted[key] = {k: v for k, v in value.items() if k not in PERSONAL_FIELDS}
        else:
            redacted[key] = value
    redacted["redacted"] = True
    return redacted


def _merge_patch(contact: Contact, patch: ContactUpdate) -> dict[str, Any]:
    current = {name: getattr(contact, name) for name in PROFILE_FIELDS}
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if name in ("handles", "external_ids", "consent", "attributes") and value is not None:
            merged = dict(current[name] or {})
            for key, item in value.items():
                key = str(key)
                if item is None:
                    merged.pop(key, None)
                else:
                    merged[key] = item
            current[name] = merged
        elif value is None and name in ("emails", "phones", "tags"):
            current[name] = []
        elif value is None and name in ("tier", "stage"):
            raise Unprocessable(f"{name} cannot be cleared.", field=name)
        else:
            current[name] = value
    return current


async def count_live(session: AsyncSession) -> int:
    return int(
        await session.scalar(select(func.count()).select_from(Contact).where(col(Contact.status) == "active")) or 0
    )
