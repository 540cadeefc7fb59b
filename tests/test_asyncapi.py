"""The AsyncAPI 3.0 event catalogue: docs/asyncapi.yaml is the generator's output, and the document holds together.

No official AsyncAPI JSON Schema is installed (check-jsonschema vendors none), so the structure the
specification requires is checked here: every reference resolves, channel addresses and their parameters agree,
each event has one send operation and one receive per consumer, and every schema is a valid JSON Schema whose
data fields are typed, described and required. Real events are validated in tests/test_asyncapi_stack.py."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import jsonschema
import pytest
import yaml

from servicekit.asyncapi import DOCUMENT, build, event_schemas, main, render_yaml
from servicekit.catalogue import all_events
from servicekit.events import make_event

KEY = re.compile(r"^[\w\d.\-_]+$")  # AsyncAPI 3.0: the keys of channels, operations and components


def resolve(document: dict[str, Any], reference: str) -> Any:
    assert reference.startswith("#/"), reference
    node: Any = document
    for part in reference[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def references(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in references(value)]
    if isinstance(node, list):
        return [r for value in node for r in references(value)]
    return []


def test_docs_asyncapi_yaml_is_the_generators_output() -> None:
    assert DOCUMENT.read_text() == render_yaml(), "docs/asyncapi.yaml is stale: run `python -m servicekit.asyncapi`"
    assert main(["--check"]) == 0
    assert yaml.safe_load(DOCUMENT.read_text()) == build()


def test_every_reference_resolves_and_every_key_is_allowed() -> None:
    document = build()
    assert document["asyncapi"] == "3.0.0" and document["info"]["version"] == version("touchpoint")
    found = references(document)
    assert len(found) > 100
    for reference in found:
        resolve(document, reference)
    for section in (document["channels"], document["operations"], *document["components"].values()):
        assert all(KEY.match(key) for key in section), [key for key in section if not KEY.match(key)]


def test_a_channel_per_event_with_its_subjects_parameters_and_its_producer_and_consumers() -> None:
    document = build()
    events = all_events()
    assert len(document["channels"]) == len(events) == len({e.type for e in events}) == 17
    for doc in events:
        (key,) = [k for k, c in document["channels"].items() if c["title"] == doc.type]
        channel = document["channels"][key]
        assert set(re.findall(r"\{(\w+)\}", channel["address"])) == set(channel.get("parameters", {}))
        assert channel["address"].count(".") == doc.subject.count(".")
        (message,) = channel["messages"].values()
        assert resolve(document, message["$ref"])["name"] == doc.type
        operations = [o for o in document["operations"].values() if o["channel"]["$ref"] == f"#/channels/{key}"]
        assert [o["action"] for o in operations].count("send") == 1
        assert [o["action"] for o in operations].count("receive") == len(doc.consumers) >= 1
        assert all(o["action"] in ("send", "receive") for o in operations)
    assert document["channels"]["contactCreatedV1"]["address"] == "crm.contacts.created.{contact_id}"
    assert document["servers"]["nats"]["protocol"] == "nats"


def test_every_schema_is_valid_and_every_data_field_typed_described_and_required() -> None:
    document = build()
    schemas = document["components"]["schemas"]
    for schema in schemas.values():
        jsonschema.Draft7Validator.check_schema(schema)
    for message in document["components"]["messages"].values():
        data = resolve(document, message["payload"]["allOf"][1]["properties"]["data"]["$ref"])
        assert data["additionalProperties"] is False
        assert sorted(data["required"]) == sorted(data["properties"]), message["name"]
        for name, prop in data["properties"].items():
            assert prop.get("description"), (message["name"], name)
            assert {"type", "$ref", "anyOf", "allOf", "const", "enum"} & set(prop), (message["name"], name)
    # The models the producers dump are the data's source where they exist.
    assert set(schemas["TouchpointReadData"]["properties"]) >= {"id", "contact_id", "channel", "sentiment"}
    assert "body" not in schemas["TouchpointReadData"]["properties"]
    assert schemas["FollowupReadData"]["properties"]["status"]["enum"] == [
        "scheduled",
        "due",
        "completed",
        "cancelled",
        "skipped",
    ]
    assert schemas["ContactCreatedV1Data"]["properties"]["contact"]["$ref"] == "#/components/schemas/ContactRead"


def staff_event(**data: Any) -> dict[str, Any]:
    document = {"id": str(uuid.uuid4()), "handle": "jorge.diaz", "name": None, "role": "agent", "teams": ["support"],
                "timezone": None, "active": True, **data}  # fmt: skip
    event = make_event(type="crm.staff.changed.v1", source="touchpoint/gateway", subject="jorge.diaz",
                       data=document, time=datetime(2026, 1, 5, tzinfo=UTC))  # fmt: skip
    loaded: dict[str, Any] = json.loads(event.to_json())
    return loaded


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"nickname": "J"}, "Additional properties are not allowed"),
        ({"role": "owner"}, "is not one of"),
        ({"teams": "support"}, "is not of type 'array'"),
    ],
)
def test_an_event_schema_refuses_an_undocumented_or_mistyped_field(change: dict[str, Any], complaint: str) -> None:
    validator = jsonschema.Draft7Validator(event_schemas()["crm.staff.changed.v1"])
    assert list(validator.iter_errors(staff_event())) == []
    errors = [e.message for e in validator.iter_errors(staff_event(**change))]
    assert errors and complaint in errors[0], errors
    wrong_type = {**staff_event(), "type": "crm.staff.removed.v1"}
    assert list(validator.iter_errors(wrong_type))
