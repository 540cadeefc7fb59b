"""Trimmed text fields whose limits hold for the text as sent.

pydantic's ``strip_whitespace`` strips *before* it checks the length, so ``"  " + "a" * 200`` passes a
``max_length=200`` that the OpenAPI document states for the sent value. Here the length is checked as
sent (what the document says), then the text is trimmed and must still hold ``min_length`` characters:

    Name = Annotated[str, StringConstraints(min_length=1, max_length=200), trimmed()]
"""

from __future__ import annotations

from pydantic import AfterValidator


def trimmed(min_length: int = 1) -> AfterValidator:
    """Strip surrounding white space after the length checks; at least ``min_length`` characters must remain
    (``min_length=0``: blank text is kept as the empty string)."""

    def trim(value: str) -> str:
        value = value.strip()
        if len(value) < min_length:
            raise ValueError(
                "must hold more than white space"
                if min_length == 1
                else f"must hold at least {min_length} characters besides white space"
            )
        return value

    return AfterValidator(trim)
