"""JSON Schema fragments for rules a model validator checks across fields, so the OpenAPI document states
them too (clients and Schemathesis then know which bodies are valid)."""

from __future__ import annotations

from typing import Any


def exactly_one_of(kinds: dict[str, str]) -> dict[str, Any]:
    """Exactly one of these fields is given and not null; ``kinds`` maps each to its JSON type."""
    return {"oneOf": [{"required": [name], "properties": {name: {"type": kind}}} for name, kind in kinds.items()]}


def at_least_one_of(kinds: dict[str, str]) -> dict[str, Any]:
    """At least one of these fields is given and not null; ``kinds`` maps each to its JSON type."""
    return {"anyOf": [{"required": [name], "properties": {name: {"type": kind}}} for name, kind in kinds.items()]}
