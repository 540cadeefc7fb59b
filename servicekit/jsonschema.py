"""JSON Schema for rules a model validator checks across fields, so the OpenAPI document states them too
(clients and Schemathesis then know which bodies are valid).

Use as ``model_config = ConfigDict(json_schema_extra=stated(exactly_one_of("a", "b"), ...))``. Each rule is
built from the model's own property schemas, so "given" means present, not null and valid as that field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Rule = Callable[[dict[str, Any]], dict[str, Any]]


def _given(schema: dict[str, Any], name: str) -> dict[str, Any]:
    prop: dict[str, Any] = schema["properties"][name]
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    kept = {k: v for k, v in prop.items() if k not in ("anyOf", "default", "title", "description")}
    return {**kept, **branches[0]} if len(branches) == 1 else {**kept, "anyOf": branches}


def _absent_or_null(name: str) -> dict[str, Any]:
    return {"properties": {name: {"type": "null"}}}


def exactly_one_of(*names: str) -> Rule:
    """Exactly one of these fields is given (and not null)."""
    return lambda schema: {"oneOf": [{"required": [n], "properties": {n: _given(schema, n)}} for n in names]}


def both_or_neither(a: str, b: str) -> Rule:
    """Both fields are given, or neither is."""
    return lambda schema: {
        "anyOf": [
            {"properties": {a: {"type": "null"}, b: {"type": "null"}}},
            {"required": [a, b], "properties": {a: _given(schema, a), b: _given(schema, b)}},
        ]
    }


def needs(name: str, other: str) -> Rule:
    """When ``name`` is given, ``other`` is given too."""
    return lambda schema: {
        "anyOf": [_absent_or_null(name), {"required": [other], "properties": {other: _given(schema, other)}}]
    }


def stated(*rules: Rule) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` that adds the rules to the model's schema (all of them must hold)."""

    def extra(schema: dict[str, Any]) -> None:
        fragments = [rule(schema) for rule in rules]
        if len(fragments) == 1:
            schema.update(fragments[0])
        else:
            schema["allOf"] = fragments

    return extra


def at_least_one_of(*names: str) -> Rule:
    """At least one of these fields is given (and not null)."""
    return lambda schema: {"anyOf": [{"required": [n], "properties": {n: _given(schema, n)}} for n in names]}
