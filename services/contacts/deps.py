"""Typed dependencies of the contacts routes, and what the lifespan builds for them."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from starlette.applications import Starlette

from servicekit.deps import SessionDep as SessionDep
from services.contacts.service import ContactService


@dataclass(frozen=True)
class ContactsState:
    """The contacts service's own objects, built in the lifespan and kept as ``app.state.contacts``."""

    contacts: ContactService


def contacts_state(app: Starlette) -> ContactsState:
    state: ContactsState = app.state.contacts
    return state


def _contacts(request: Request) -> ContactService:
    return contacts_state(request.app).contacts


ContactsDep = Annotated[ContactService, Depends(_contacts)]
