"""Finding contacts the way an agent types: a phone number in any common format, a name with a typo, and every
match reachable page by page, exact matches first.

A search runs in three tiers, each newest first: contacts with a term equal to the query (or to one of its phone
forms), then those with a term starting with it, then those with a name or company word within one typo of it
(trigram similarity: ``pg_trgm`` on PostgreSQL, our own trigram table on SQLite). A contact appears once, in the
first tier it matches. The cursor holds the tier, the last id shown, and the newest contact id when the search
began (the ceiling): contacts added while an agent pages never shuffle the pages, in any tier."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import phonenumbers
from sqlalchemy import Select, and_, delete, func, intersect, or_, select, text, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlmodel import col

from servicekit import cursors
from servicekit.db import upsert
from services.contacts.models import Contact, SearchTerm, SearchTrigram

# pg_trgm's own default: "fatma" is 0.44 from "Fatima", "jonson" 0.5 from "Johnson"; unrelated names stay below.
DEFAULT_SIMILARITY = 0.3
# A query shorter than this is not searched for typos: one or two letters are within a typo of half the names.
FUZZY_MIN_CHARS = 3
# The most vocabulary words (SQLite) a typo search follows, the closest first.
FUZZY_MAX_WORDS = 200
# A prefix matching at most this many search terms is searched by gathering its matches and ordering their ids;
# a more common one by walking contacts newest first until a page is full, which is short because the prefix is
# common (unless its matches are all among the oldest contacts). Counting stops at this many, too.
COLLECT_LIMIT = 2000

# The fields the exact and prefix tiers compare. National phone parts have a field of their own, not ``q``: the
# previous release searches ``q`` terms by prefix, and its answers must not change while it serves beside this one
# (docs/deploy.md, "Migrations: expand, then contract"); it never reads ``national`` nor ``name``.
TYPED_FIELDS = ("q", "national")

EXACT, PREFIX, TYPO = 0, 1, 2
TIERS = (EXACT, PREFIX, TYPO)

_PHONE_LIKE = re.compile(r"^\+?[\d\s().\-/]+$")
_WORD = re.compile(r"[^\W_]+")


# --- what is indexed ----------------------------------------------------------------------------------------------


def name_terms(*texts: str | None) -> set[str]:
    """The lower-cased name or company as a whole and each of its words: what a prefix search compares."""
    terms: set[str] = set()
    for text_ in texts:
        if text_:
            lowered = text_.lower()
            terms.add(lowered[:200])
            terms |= name_words(text_)
    return terms


def name_words(*texts: str | None) -> set[str]:
    """The lower-cased words of a name or company: what a typo search compares, word by word (a whole name as
    one term would match every contact sharing one of its words, twice the rows for nothing)."""
    return {word[:200] for text_ in texts if text_ for word in text_.lower().replace(",", " ").split()}


def phone_terms(phone: str) -> set[str]:
    """An E.164 number as stored and without its ``+`` (field ``q``)."""
    return {phone, phone.lstrip("+")}


def national_term(phone: str) -> str | None:
    """A number's national part (``612992580`` for +34612992580), field ``national``: an agent who types the number
    as the customer says it, without the country code, finds it."""
    try:
        return str(phonenumbers.national_significant_number(phonenumbers.parse(phone)))
    except phonenumbers.NumberParseException:
        return None


def trigrams(term: str) -> set[str]:
    """pg_trgm's trigrams of a text: each alphanumeric word, lower-cased, padded with two spaces in front and one
    behind, cut in threes. SQLite's typo search thus agrees with PostgreSQL's."""
    grams: set[str] = set()
    for word in _WORD.findall(term.lower()):
        padded = f"  {word} "
        grams |= {padded[i : i + 3] for i in range(len(padded) - 2)}
    return grams


def trigram_rows(words: Iterable[str]) -> list[dict[str, Any]]:
    rows = []
    for word in words:
        grams = trigrams(word)
        rows += [{"trigram": gram, "term": word, "grams": len(grams)} for gram in grams]
    return rows


async def replace_terms(
    session: AsyncSession, contact_ids: list[uuid.UUID], terms: Iterable[tuple[uuid.UUID, str, str]]
) -> None:
    """Make the search terms of these contacts exactly ``terms`` (none: the contacts leave every index).

    On SQLite the trigram vocabulary follows: words new to it are added, words no live contact has any more are
    deleted, so an erased customer's name stays in no index. (SQLite runs one writer at a time, so no other
    transaction can add or drop the same word meanwhile.)"""
    sqlite = session.get_bind().dialect.name == "sqlite"
    before: set[str] = set()
    if sqlite:
        old = select(col(SearchTerm.term)).where(
            col(SearchTerm.contact_id).in_(contact_ids), col(SearchTerm.field) == "name"
        )
        before = set((await session.scalars(old)).all())
    await session.execute(delete(SearchTerm).where(col(SearchTerm.contact_id).in_(contact_ids)))
    rows = [SearchTerm(contact_id=c, field=f, term=t) for c, f, t in terms]
    session.add_all(rows)
    await session.flush()
    if not sqlite:
        return  # PostgreSQL's trigram index is on the search terms themselves
    words = {row.term for row in rows if row.field == "name"}
    if words:
        known = select(col(SearchTrigram.term)).where(col(SearchTrigram.term).in_(words)).distinct()
        # A word without a letter or digit ("&" in "Maple & Rye") has no trigrams: nothing to add for it.
        fresh = trigram_rows(words - set((await session.scalars(known)).all()))
        if fresh:
            await session.execute(upsert(session, SearchTrigram).on_conflict_do_nothing(), fresh)
    gone = before - words
    if gone:
        still_used = (
            select(col(SearchTerm.term))
            .where(col(SearchTerm.field) == "name", col(SearchTerm.term) == col(SearchTrigram.term))
            .exists()
        )
        await session.execute(delete(SearchTrigram).where(col(SearchTrigram.term).in_(gone), ~still_used))


# --- what is searched ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """The forms of what the agent typed that a term may equal or start with, and the text a typo search compares
    (None: no typo search, for a phone number, an email or a text too short)."""

    forms: tuple[str, ...]
    fuzzy: str | None


def parse_query(q: str, region: str) -> Query:
    """``612 992 580``, ``(612) 992-580``, ``0034612992580`` and ``+34 612 992 580`` all give forms that the terms
    of +34612992580 equal: the digits as typed, the E.164 number the default region makes of them, the number
    after an international ``00`` prefix, and the national part without a trunk ``0``."""
    text_ = q.strip().lower()
    forms = [text_]
    digits = re.sub(r"\D", "", text_)
    phone_like = bool(_PHONE_LIKE.match(text_)) and len(digits) >= 3
    if phone_like:
        forms.append(digits)
        if text_.startswith("+"):
            forms.append("+" + digits)
        elif digits.startswith("00"):
            forms += ["+" + digits[2:], digits[2:]]
        elif digits.startswith("0"):
            forms.append(digits.lstrip("0"))
        for region_ in (region, None):
            try:
                number = phonenumbers.parse(text_, region_)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                forms.append(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
                break
    forms = [f[:200] for f in dict.fromkeys(forms) if f]
    fuzzy = None
    long_word = any(len(word) >= FUZZY_MIN_CHARS for word in text_.replace(",", " ").split())
    if not phone_like and "@" not in text_ and long_word and _WORD.search(text_):
        fuzzy = text_[:200]
    return Query(forms=tuple(forms), fuzzy=fuzzy)


@dataclass(frozen=True)
class Position:
    tier: int = EXACT
    before: uuid.UUID | None = None
    ceiling: uuid.UUID | None = None


def encode_position(position: Position) -> str:
    document: dict[str, Any] = {"tier": position.tier, "before": str(position.before)}
    if position.ceiling is not None:
        document["ceiling"] = str(position.ceiling)
    return cursors.encode(document)


def decode_position(cursor: str) -> Position:
    def read(document: dict[str, Any]) -> Position:
        tier = int(document.get("tier", EXACT))
        if tier not in TIERS:
            raise ValueError(tier)
        ceiling = document.get("ceiling")
        return Position(tier, uuid.UUID(document["before"]), uuid.UUID(ceiling) if ceiling is not None else None)

    return cursors.decode(cursor, read)


@dataclass(frozen=True)
class Filters:
    """The list's other filters, applied to every tier."""

    conditions: tuple[Any, ...]

    @property
    def any(self) -> bool:
        return bool(self.conditions)


async def search_contacts(
    *,
    session: AsyncSession,
    q: str,
    region: str,
    similarity: float,
    filters: Filters,
    limit: int,
    cursor: str | None,
) -> tuple[list[Contact], str | None]:
    query = parse_query(q, region)
    position = decode_position(cursor) if cursor else Position()
    ceiling = position.ceiling
    if ceiling is None:
        # Not max(id): PostgreSQL has no max over uuid; this reads the primary key's last entry either way.
        ceiling = await session.scalar(select(col(Contact.id)).order_by(col(Contact.id).desc()).limit(1))
        if ceiling is None:
            return [], None
    found: list[tuple[int, Contact]] = []
    for tier in TIERS[position.tier :]:
        before = position.before if tier == position.tier else None
        want = limit + 1 - len(found)
        rows = await _tier_page(session, query, tier, before, ceiling, filters, want, similarity)
        found += [(tier, row) for row in rows]
        if len(found) > limit:
            break
    if len(found) <= limit:
        return [row for _, row in found], None
    tier, last = found[limit - 1]
    return [row for _, row in found[:limit]], encode_position(Position(tier, last.id, ceiling))


async def _tier_page(
    session: AsyncSession,
    query: Query,
    tier: int,
    before: uuid.UUID | None,
    ceiling: uuid.UUID,
    filters: Filters,
    want: int,
    similarity: float,
) -> list[Contact]:
    """Up to ``want`` live contacts of one tier, newest first, below ``before`` and at most ``ceiling``."""
    bounds: list[Any] = [col(SearchTerm.contact_id) <= ceiling]
    if before is not None:
        bounds.append(col(SearchTerm.contact_id) < before)
    outer = select(Contact).where(col(Contact.status) == "active", *filters.conditions)
    if tier == EXACT:
        ids = _ids(col(SearchTerm.field).in_(TYPED_FIELDS), col(SearchTerm.term).in_(query.forms), *bounds)
    elif tier == PREFIX:
        # One range scan a form, in a UNION: SQLite would scan the whole index for an OR of ranges.
        per_form = [
            _ids(col(SearchTerm.field).in_(TYPED_FIELDS), _prefix_of(SearchTerm, (form,)), *bounds).where(
                ~_has(SearchTerm.contact_id, _equal_to(query.forms))
            )
            for form in query.forms
        ]
        matching = (union_all(*per_form) if len(per_form) > 1 else per_form[0]).subquery()
        counted = select(func.count()).select_from(select(matching.c.contact_id).limit(COLLECT_LIMIT + 1).subquery())
        if (await session.scalar(counted) or 0) > COLLECT_LIMIT:
            # A common prefix: walk contacts newest first and probe each one's terms. The probe compares the
            # term's head rather than a range so the planner cannot take it for a rare one (from the histogram,
            # a range on terms is estimated badly) and gather every match instead.
            outer = outer.where(
                col(Contact.id) <= ceiling,
                *([col(Contact.id) < before] if before is not None else []),
                _has(Contact.id, _head_of(query.forms)),
                ~_has(Contact.id, _equal_to(query.forms)),
            )
            return await _newest(session, outer, want)
        found = select(matching.c.contact_id)
        if not filters.any:
            found = found.group_by(matching.c.contact_id).order_by(matching.c.contact_id.desc()).limit(want)
        return await _newest(session, outer.where(col(Contact.id).in_(found)), want)
    else:
        if query.fuzzy is None:
            return []
        # Every word typed must be within a typo of one of the contact's name or company words ("fatma khan" is
        # not every Fatma); a word shorter than that, an initial say, must start one.
        each: list[Any] = []
        for word in query.fuzzy.replace(",", " ").split():
            close = await _close_to(session, word, similarity) if len(word) >= FUZZY_MIN_CHARS else _starting(word)
            if close is None:
                return []
            each.append(close)
        # One index scan a word (GIN on PostgreSQL, the vocabulary's words on SQLite), intersected.
        per_word = [_ids(close(SearchTerm), *bounds) for close in each]
        both = (intersect(*per_word) if len(per_word) > 1 else per_word[0]).subquery()
        found = select(both.c.contact_id).where(~_has(both.c.contact_id, _head_of(query.forms)))
        if not filters.any:
            found = found.group_by(both.c.contact_id).order_by(both.c.contact_id.desc()).limit(want)
        return await _newest(session, outer.where(col(Contact.id).in_(found)), want)
    if not filters.any:
        # Search terms exist only for live contacts (merge and erase delete them): the page is the newest
        # ``want`` of the matches, ordered in the database on the ids alone.
        ids = ids.group_by(col(SearchTerm.contact_id)).order_by(col(SearchTerm.contact_id).desc()).limit(want)
    return await _newest(session, outer.where(col(Contact.id).in_(ids)), want)


def _ids(*conditions: Any) -> Select[Any]:
    return select(col(SearchTerm.contact_id)).where(*conditions)


async def _newest(session: AsyncSession, query: Select[Any], want: int) -> list[Contact]:
    return list((await session.scalars(query.order_by(col(Contact.id).desc()).limit(want))).all())


def _has(contact_id: Any, condition: Any) -> Any:
    """Whether the contact has a search term meeting ``condition(term)`` (given an alias of the terms)."""
    term = aliased(SearchTerm)
    return select(col(term.term)).where(col(term.contact_id) == contact_id, condition(term)).exists()


def _equal_to(forms: tuple[str, ...]) -> Any:
    def condition(term: Any) -> Any:
        return and_(col(term.field).in_(TYPED_FIELDS), col(term.term).in_(forms))

    return condition


def _head_of(forms: tuple[str, ...]) -> Any:
    def condition(term: Any) -> Any:
        heads = [func.substr(col(term.term), 1, len(form)) == form for form in forms]
        return and_(col(term.field).in_(TYPED_FIELDS), or_(*heads))

    return condition


def _prefix_of(table: Any, forms: tuple[str, ...]) -> Any:
    """Terms starting with any of the forms: a range scan on the term index for each."""
    ranges: list[Any] = []
    for form in forms:
        upper = _next_prefix(form)
        if upper is None:
            escaped = form.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            ranges.append(col(table.term).like(escaped + "%", escape="\\"))
        else:
            ranges.append(and_(col(table.term) >= form, col(table.term) < upper))
    return or_(*ranges)


def _next_prefix(prefix: str) -> str | None:
    """The smallest string after every string that starts with ``prefix`` (None past U+10FFFF)."""
    for cut in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[cut]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000  # surrogates cannot be stored or sent to the database
        if code <= 0x10FFFF:
            return prefix[:cut] + chr(code)
    return None


def _starting(word: str) -> Any:
    def condition(term: Any) -> Any:
        return and_(col(term.field) == "name", _prefix_of(term, (word,)))

    return condition


async def _close_to(session: AsyncSession, word: str, similarity: float) -> Any:
    """The condition on a name term that it is within a typo of ``word`` (None: no term is)."""
    if session.get_bind().dialect.name == "postgresql":
        # `%` is the operator the GIN trigram index answers; its threshold is this transaction's setting.
        await session.execute(
            text("SELECT set_config('pg_trgm.similarity_threshold', :threshold, true)"),
            {"threshold": str(similarity)},
        )
        return lambda term: and_(col(term.field) == "name", col(term.term).op("%")(word))
    grams = trigrams(word)
    if not grams:
        return None
    shared = func.count()
    score = shared * 1.0 / (len(grams) + func.max(SearchTrigram.grams) - shared)
    words = (
        select(col(SearchTrigram.term))
        .where(col(SearchTrigram.trigram).in_(grams))
        .group_by(col(SearchTrigram.term))
        .having(score >= similarity)
        .order_by(score.desc())
        .limit(FUZZY_MAX_WORDS)
    )
    close = list((await session.scalars(words)).all())
    if not close:
        return None
    return lambda term: and_(col(term.field) == "name", col(term.term).in_(close))
