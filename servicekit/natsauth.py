"""Who may do what on NATS: one user per service, an ``ingest`` user for outside systems, an ``admin`` for operators.

Each service may publish only its own events and use only the JetStream API of its own streams and its own durable
consumers; replies reach it on its own inbox prefix (``_INBOX_<user>``), so no user can read another's replies (a
pull consumer's messages are replies). The ``ingest`` user may only publish touchpoints on ``crm.ingest.>``.
Anonymous connections are refused. ``python -m servicekit.natsauth`` writes the users file the deployments include
(deploy/nats/users.conf, deploy/kubernetes/platform/nats-users.conf); a test keeps them equal to this module.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
USERS_FILES = (ROOT / "deploy" / "nats" / "users.conf", ROOT / "deploy" / "kubernetes" / "platform" / "nats-users.conf")
SERVICES = ("contacts", "interactions", "followups", "gateway")
USERS = (*SERVICES, "ingest", "admin")
_DEADLETTER = "CRM_DEADLETTER"
_PURGES = "CRM_PURGES"


def inbox_prefix(user: str) -> str:
    return f"_INBOX_{user}"


@dataclass
class Permissions:
    publish: list[str] = field(default_factory=list)
    publish_deny: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)

    def owns(self, stream: str, *, purges: bool = False) -> None:
        """Creates and updates the stream; with ``purges``, reads and deletes its messages and lists its consumers."""
        ops = ["INFO", "CREATE", "UPDATE"] + (["MSG.GET", "MSG.DELETE"] if purges else [])
        self.publish += [f"$JS.API.STREAM.{op}.{stream}" for op in ops]
        if purges:
            self.publish.append(f"$JS.API.CONSUMER.LIST.{stream}")

    def consumes(self, stream: str, durable: str) -> None:
        self.publish += [
            f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
            f"$JS.ACK.{stream}.{durable}.>",
            f"crm.deadletter.{durable}.*",  # where its inbox parks what it can never apply (per contact)
        ]


def _service(user: str) -> Permissions:
    perms = Permissions(subscribe=[f"{inbox_prefix(user)}.>"])
    perms.owns(_DEADLETTER)  # every service's bus ensures the dead-letter stream
    return perms


def _producer(user: str, stream: str) -> Permissions:
    perms = _service(user)
    perms.publish += [f"crm.{user}.>", f"crm.purge.{user}.>"]
    perms.owns(stream, purges=True)
    perms.owns(_PURGES)
    perms.consumes(_PURGES, f"{user}-purge")
    return perms


def permissions() -> dict[str, Permissions | None]:
    """Each user's permissions; None is every permission (the operators' ``admin``)."""
    contacts = _producer("contacts", "CRM_CONTACTS")
    contacts.owns(_DEADLETTER, purges=True)  # an erasure removes the contact's dead letters too
    contacts.consumes("CRM_STAFF", "contacts-staff")  # its copy of the staff handles (a CSV import's owners)
    interactions = _producer("interactions", "CRM_INTERACTIONS")
    interactions.owns("CRM_INGEST")
    interactions.consumes("CRM_INGEST", "interactions-ingest")
    interactions.consumes("CRM_CONTACTS", "interactions-contacts")
    interactions.publish.append("crm.ingest.deadletter")
    followups = _producer("followups", "CRM_FOLLOWUPS")
    followups.consumes("CRM_CONTACTS", "followups-contacts")
    followups.consumes("CRM_INTERACTIONS", "followups-interactions")
    followups.consumes("CRM_STAFF", "followups-staff")
    gateway = _service("gateway")
    for stream, root in (("CRM_CONTACTS", "contacts"), ("CRM_INTERACTIONS", "interactions"),
                         ("CRM_FOLLOWUPS", "followups")):  # fmt: skip
        gateway.consumes(stream, f"gateway-{root}")
        gateway.consumes(stream, f"gateway-webhooks-{root}")  # the outbound webhooks' feed
    gateway.publish.append("crm.staff.>")  # staff changes, from the gateway's outbox (it owns staff)
    gateway.owns("CRM_STAFF")
    gateway.publish.append("gateway.>")  # live fan-out between gateway processes (nothing stored)
    gateway.subscribe.append("gateway.>")
    ingest = Permissions(
        publish=["crm.ingest.>"], publish_deny=["crm.ingest.deadletter"], subscribe=[f"{inbox_prefix('ingest')}.>"]
    )
    return {"contacts": contacts, "interactions": interactions, "followups": followups, "gateway": gateway,
            "ingest": ingest, "admin": None}  # fmt: skip


def password_variable(user: str) -> str:
    return f"NATS_{user.upper()}_PASSWORD"


def render_users(password: Callable[[str], str] | None = None) -> str:
    """The nats-server ``authorization`` block. ``password(user)`` gives each password as the config writes it;
    by default a reference to the environment variable ``NATS_<USER>_PASSWORD`` of the server's process."""
    password = password or (lambda user: f"${password_variable(user)}")
    lines = [
        "# Generated by `python -m servicekit.natsauth` from servicekit/natsauth.py: edit that, not this file.",
        "# Passwords come from the server's environment (NATS_<USER>_PASSWORD). No user: no connection.",
        "authorization {",
        "  users = [",
    ]
    for user, perms in permissions().items():
        lines.append(f"    {{user: {user}, password: {password(user)}")
        if perms is not None:
            lines.append(
                f"     permissions: {{publish: {{allow: {_list(perms.publish)}"
                + (f", deny: {_list(perms.publish_deny)}" if perms.publish_deny else "")
                + f"}}, subscribe: {{allow: {_list(perms.subscribe)}}}}}"
            )
        lines.append("    }")
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


def _list(subjects: list[str]) -> str:
    return json.dumps(subjects)


def generated_passwords(path: Path) -> dict[str, str]:
    """Passwords for the dev stack, made once and kept in ``path`` (mode 0600) so restarts keep them."""
    if path.exists():
        known = json.loads(path.read_text())
        if set(known) >= set(USERS):
            return {user: str(known[user]) for user in USERS}
    made = {user: secrets.token_urlsafe(24) for user in USERS}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(json.dumps(made, indent=2) + "\n")
    return made


def with_credentials(url: str, user: str, password: str) -> str:
    """``nats://host:port`` (each of a comma-separated list) with the user and password in it."""
    parts = []
    for server in url.split(","):
        scheme, _, rest = server.partition("://")
        parts.append(f"{scheme}://{user}:{password}@{rest.rpartition('@')[2]}")
    return ",".join(parts)


def without_credentials(url: str) -> str:
    """The URL as it may be logged or shown."""
    parts = []
    for server in url.split(","):
        scheme, sep, rest = server.partition("://")
        parts.append(f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep else server.rpartition("@")[2])
    return ",".join(parts)


if __name__ == "__main__":
    text = render_users()
    for target in USERS_FILES:
        target.write_text(text)
    sys.stdout.write(text)
