"""The event catalogue as an AsyncAPI 3.0 document: docs/asyncapi.yaml and the gateway's ``GET /api/v1/asyncapi.json``.

Built from the same source as docs/events.md (servicekit/catalogue). Each event type is one channel (its
NATS subject, with the subject's variable tokens as parameters) carrying one message, whose payload is the
CloudEvents 1.0 envelope with ``data`` as the event's JSON Schema. The data schema comes from the pydantic model the
producer dumps (``EventDoc.model``) and from the catalogue's ``types``; the catalogue's descriptions describe the
fields. Every data field is required and no other may appear, so a test that validates real events from the bus
catches a producer that sends a field the catalogue does not document.

python -m servicekit.asyncapi          # rewrite docs/asyncapi.yaml and the gateway's copy, gateway/asyncapi.json
python -m servicekit.asyncapi --check  # exit 1 if either is stale (a test runs this)
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
import sys
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from servicekit.catalogue import EventDoc, all_events

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "asyncapi.yaml"
# The gateway serves this copy: it never imports a service (tests/test_gateway_contract.py), and the models the
# document is made from live in the services.
GATEWAY_COPY = ROOT / "gateway" / "asyncapi.json"
_PARAMETER = re.compile(r"<([^>]+)>")
_SCHEMAS = "#/components/schemas/"

CLOUDEVENT_DESCRIPTION = (
    "A CloudEvents 1.0 event in structured JSON mode, published through the producer's transactional outbox with "
    "the NATS header Nats-Msg-Id = id (JetStream drops a re-sent one). requestid and traceparent are the "
    "extensions of the request that caused it (absent when none did)."
)


def _package_version() -> str:
    try:
        return version("touchpoint")
    except PackageNotFoundError:  # pragma: no cover - a checkout run without installing
        return "0.0.0"


def _model(reference: str) -> type[BaseModel]:
    module_name, _, class_name = reference.partition(":")
    model = getattr(importlib.import_module(module_name), class_name)
    assert isinstance(model, type) and issubclass(model, BaseModel), reference
    return model


def _add_model(reference: str, schemas: dict[str, Any]) -> str:
    """Put the model's JSON Schema (as its JSON dump looks: serialization mode) and the schemas it refers to into
    ``schemas``; return its name there."""
    model = _model(reference)
    schema = model.model_json_schema(mode="serialization", ref_template=_SCHEMAS + "{model}")
    for name, definition in schema.pop("$defs", {}).items():
        schemas.setdefault(name, definition)
    # A dump holds every field, defaults included: each is required, no other allowed.
    schema["required"] = list(schema["properties"])
    schema["additionalProperties"] = False
    schemas.setdefault(model.__name__, schema)
    return model.__name__


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    if "$model" in schema:
        return {"$ref": _SCHEMAS + _add_model(schema["$model"], schemas)}
    return copy.deepcopy(schema)


def data_schema(doc: EventDoc, schemas: dict[str, Any]) -> dict[str, Any]:
    """The JSON Schema of the event's data; the models it names are added to ``schemas``."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    if doc.model:
        model_schema = schemas[_add_model(doc.model, schemas)]
        for name, prop in model_schema["properties"].items():
            if name not in doc.exclude:
                properties[name] = copy.deepcopy(prop)
        required += [name for name in model_schema.get("required", []) if name not in doc.exclude]
    for name, prop in doc.types.items():
        properties[name] = _resolve(prop, schemas)
        if name not in required:
            required.append(name)
    for key, meaning in doc.data.items():
        for name in key.split(", "):
            if name in properties:
                properties[name] = {**properties[name], "description": meaning}
    undocumented = sorted(set(properties) - {n for key in doc.data for n in key.split(", ")})
    assert not undocumented, f"{doc.type}: data fields with a type but no description: {undocumented}"
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


def _add_data_schema(doc: EventDoc, schemas: dict[str, Any]) -> str:
    """Put the event's data schema into ``schemas`` under a name of its own, shared by the events whose data is the
    same (the seven follow-up events carry the follow-up); return the name."""
    schema = data_schema(doc, schemas)
    for name, existing in schemas.items():
        if name.endswith("Data") and existing == schema:
            return name
    key = event_key(doc)
    name = (doc.model.partition(":")[2] if doc.model and not doc.types else key[:1].upper() + key[1:]) + "Data"
    schemas[name] = schema
    return name


CLOUDEVENT: dict[str, Any] = {
    "type": "object",
    "description": CLOUDEVENT_DESCRIPTION,
    "required": ["specversion", "id", "source", "type", "time", "data"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "description": "the event's id (UUIDv7), also its Nats-Msg-Id"},
        "source": {"type": "string", "description": "touchpoint/<producing service>"},
        "type": {"type": "string", "description": "the event type, versioned: crm.<entity>.<what happened>.v<n>"},
        "subject": {"type": "string", "description": "the id of the entity the event is about"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"const": "application/json"},
        "requestid": {"type": "string", "description": "the X-Request-ID of the request that caused it"},
        "traceparent": {"type": "string", "description": "W3C traceparent of the request that caused it"},
        "tracestate": {"type": "string", "description": "W3C tracestate that came with that traceparent"},
        "data": {"type": "object"},
    },
}
NATS_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "Nats-Msg-Id": {"type": "string", "description": "the event's id: JetStream drops a duplicate"},
        "traceparent": {"type": "string", "description": "W3C trace context, when the event has one"},
        "tracestate": {"type": "string", "description": "W3C tracestate, when it came with the traceparent"},
    },
}


def _payload(doc: EventDoc, data: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvents envelope with this event's type and data."""
    return {
        "allOf": [
            {"$ref": _SCHEMAS + "CloudEvent"},
            {"type": "object", "properties": {"type": {"const": doc.type}, "data": data}},
        ]
    }


def _address(subject: str) -> tuple[str, dict[str, Any]]:
    """``crm.contacts.created.<contact_id>`` → ``crm.contacts.created.{contact_id}`` and its parameters."""
    parameters: dict[str, Any] = {}

    def parameter(match: re.Match[str]) -> str:
        name = re.sub(r"\W+", "_", match.group(1)).strip("_")
        parameters[name] = {"description": match.group(1)}
        return "{" + name + "}"

    return _PARAMETER.sub(parameter, subject), parameters


def _service(text: str) -> str:
    """The service a catalogue producer or consumer names: ``gateway (timeline)`` → ``gateway``."""
    return re.sub(r"\W+", "_", text.split(" (")[0].split(",")[0]).strip("_")


def event_key(doc: EventDoc) -> str:
    """The event's key for its channel and message: ``crm.contact.created.v1`` → ``contactCreatedV1``."""
    words = doc.type.removeprefix("crm.").split(".")
    return words[0] + "".join(word[:1].upper() + word[1:] for w in words[1:] for word in w.split("_"))


def _referenced(schemas: dict[str, Any], messages: dict[str, Any]) -> dict[str, Any]:
    """The schemas the messages refer to, directly or through each other (a model read only for its properties
    is left out), sorted by name."""
    kept: set[str] = set()
    pending = [messages]
    while pending:
        for name in re.findall(re.escape(_SCHEMAS) + r"(\w+)", json.dumps(pending.pop())):
            if name not in kept:
                kept.add(name)
                pending.append(schemas[name])
    return {name: schemas[name] for name in sorted(kept)}


@cache
def _build() -> dict[str, Any]:
    schemas: dict[str, Any] = {"CloudEvent": CLOUDEVENT, "NatsHeaders": NATS_HEADERS}
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for doc in all_events():
        key = event_key(doc)
        address, parameters = _address(doc.subject)
        messages[key] = {
            "name": doc.type,
            "title": doc.type,
            "summary": doc.meaning,
            "contentType": "application/json",
            "headers": {"$ref": _SCHEMAS + "NatsHeaders"},
            "payload": _payload(doc, {"$ref": _SCHEMAS + _add_data_schema(doc, schemas)}),
        }
        channel: dict[str, Any] = {
            "address": address,
            "title": doc.type,
            "description": doc.meaning,
            "servers": [{"$ref": "#/servers/nats"}],
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        if parameters:
            channel["parameters"] = parameters
        channels[key] = channel
        reference = {"channel": {"$ref": f"#/channels/{key}"}}
        producers = [_service(p) for p in doc.producer.split(",")]
        operations[f"{key}.send"] = {
            "action": "send",
            **reference,
            "summary": f"{doc.producer} publish(es) {doc.type} through the transactional outbox",
            "tags": [{"name": producer} for producer in producers],
        }
        for consumer in doc.consumers:
            operations[f"{key}.receive.{_service(consumer)}"] = {
                "action": "receive",
                **reference,
                "summary": f"{consumer}: a durable JetStream consumer, idempotent by event id",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Touchpoint events",
            "version": _package_version(),
            "description": "Every event Touchpoint's services publish on NATS JetStream, generated from the event "
            "catalogue (servicekit/catalogue; `python -m servicekit.asyncapi`). Consumers are durable and "
            "idempotent: an event may arrive again, never is lost.",
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "The NATS JetStream server of the deployment (TOUCHPOINT_NATS_URL); each service "
                "connects as its own user, allowed only its own subjects.",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _referenced(schemas, messages)},
    }


def build() -> dict[str, Any]:
    """The AsyncAPI 3.0 document (a fresh copy the caller may change)."""
    return copy.deepcopy(_build())


def event_schemas() -> dict[str, dict[str, Any]]:
    """Each event type's JSON Schema (the CloudEvent with its data), self-contained: the document's component
    schemas travel with it, so its ``#/components/schemas/…`` references resolve. What a validator of real events
    needs."""
    document = _build()
    return {
        message["name"]: {**copy.deepcopy(message["payload"]), "components": copy.deepcopy(document["components"])}
        for message in document["components"]["messages"].values()
    }


def render_yaml() -> str:
    import yaml

    header = "# Generated from servicekit/catalogue by `python -m servicekit.asyncapi`; do not edit by hand.\n"

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # write each $ref out, never as a YAML anchor

    return header + yaml.dump(build(), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=120)


def render_json() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a written document is stale")
    args = parser.parse_args(argv)
    outputs = {DOCUMENT: render_yaml(), GATEWAY_COPY: render_json()}
    if args.check:
        stale = [
            str(path.relative_to(ROOT))
            for path, text in outputs.items()
            if not path.exists() or path.read_text() != text
        ]
        if stale:
            print(f"{', '.join(stale)} stale: run `python -m servicekit.asyncapi`", file=sys.stderr)
            return 1
        return 0
    for path, text in outputs.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
