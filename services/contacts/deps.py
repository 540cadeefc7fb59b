"""Typed dependencies of the contacts routes."""

from typing import Annotated

from fastapi import Depends, Request

from servicekit.deps import SessionDep as SessionDep
from services.contacts.service import ContactService


def _contacts(request: Request) -> ContactService:
    service: ContactService = request.app.state.runtime.state["contacts"]
    return service


ContactsDep = Annotated[ContactService, Depends(_contacts)]
