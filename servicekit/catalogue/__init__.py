"""The event catalogue: the one place where every event type is documented.

Each producer's events are listed in a module of this package; the event catalogue of docs/events.md
is generated from it (``python -m servicekit.docs``) and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EventDoc:
    type: str
    producer: str
    subject: str
    meaning: str
    data: dict[str, str] = field(default_factory=dict)
    consumers: tuple[str, ...] = ()


def all_events() -> list[EventDoc]:
    from servicekit.catalogue import bus, contacts, followups, interactions, staff

    return [*contacts.EVENTS, *interactions.EVENTS, *followups.EVENTS, *staff.EVENTS, *bus.EVENTS]


def render_markdown() -> str:
    lines = [
        "Every event is a CloudEvents 1.0 JSON document (`specversion`, `id`, `source`, `type`, `subject`, "
        "`time`, `data`, plus the `requestid` and `traceparent` extensions of the request that caused it), "
        "published through the producer's transactional outbox with `Nats-Msg-Id` = `id`.",
        "",
    ]
    for doc in all_events():
        lines.append(f"### `{doc.type}`")
        lines.append("")
        lines.append(f"{doc.meaning}")
        lines.append("")
        lines.append(f"- producer: {doc.producer}; NATS subject: `{doc.subject}`")
        if doc.consumers:
            lines.append(f"- consumed by: {', '.join(doc.consumers)}")
        if doc.data:
            lines.append("- `data`:")
            for name, meaning in doc.data.items():
                lines.append(f"  - `{name}`: {meaning}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
