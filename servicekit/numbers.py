"""Integers as JSON Schema means them.

pydantic's lax ``int`` takes ``true`` as 1 (a CSAT "score" nobody gave), its ``StrictInt`` refuses ``497.0``,
which JSON Schema's ``integer`` accepts (an integral number, whatever its spelling). ``NotBoolean`` sits
between: whole numbers however written, never a boolean. Put it after the constraints, so the document
still states them::

    csat: Annotated[int, Field(ge=1, le=5), NotBoolean] | None = None
"""

from __future__ import annotations

from typing import Any

from pydantic import BeforeValidator


def _no_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


NotBoolean = BeforeValidator(_no_boolean)
