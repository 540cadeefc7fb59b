"""Read docker-compose.yml the way docker compose does: YAML, then ``${VAR}`` interpolation from .env.

Also the map from each compose service to the settings class that reads its environment.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings
from pydantic_settings.sources import EnvSettingsSource

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"

# Compose interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        # With a colon, empty counts as unset (as in compose and the shell).
        unset = not value if op in (":-", ":?") else value is None
        if op and op.endswith("-") and unset:
            return interpolate(arg, env)
        if op and op.endswith("?") and unset:
            raise InterpolationError(f"required variable {name} is missing: {arg}")
        return value or ""

    return _INTERPOLATION.sub(replace, text)


def variables(text: str) -> dict[str, str | None]:
    """Every variable the text interpolates, with its default when it has one (``None``: required/none)."""
    found: dict[str, str | None] = {}
    for match in _INTERPOLATION.finditer(text):
        name = match.group("braced") or match.group("named")
        if name is None:
            continue
        default = match.group("arg") if (match.group("op") or "").endswith("-") else None
        if found.get(name) is None:
            found[name] = default
    return found


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments and blank lines ignored)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        values[key.strip()] = value.strip().strip("'\"")
    return values


def load_raw(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def load(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose model after interpolation (YAML anchors and ``<<`` merges resolved by the loader)."""
    return dict(_interpolate_tree(load_raw(path), env))


def environment_of(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's ``environment`` (map or ``KEY=VALUE`` list form) as a dict of strings."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {key: value for key, _, value in pairs}
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


# ---- settings classes: the single source of truth for environment variable names


@dataclass(frozen=True)
class SettingsRef:
    prefix: str
    module: str
    cls: str


SETTINGS = {
    "contacts": SettingsRef("CONTACTS_", "services.contacts.settings", "ContactsSettings"),
    "interactions": SettingsRef("INTERACTIONS_", "services.interactions.settings", "InteractionsSettings"),
    "followups": SettingsRef("FOLLOWUPS_", "services.followups.settings", "FollowupsSettings"),
    "gateway": SettingsRef("GATEWAY_", "gateway.settings", "GatewaySettings"),
}


def env_names(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """The environment variables a settings class reads → the field each fills, as pydantic-settings itself
    derives them (``env_prefix`` + field name, or the field's validation aliases, which take no prefix)."""
    source = EnvSettingsSource(settings_cls)
    names: dict[str, str] = {}
    for field_name, field in settings_cls.model_fields.items():
        for _key, env_name, _complex in source._extract_field_info(field, field_name):
            names[env_name if settings_cls.model_config.get("case_sensitive") else env_name.upper()] = field_name
    return names


def settings_class(service: str) -> type[BaseSettings]:
    """The service's settings class (an import error or a missing class fails the caller)."""
    ref = SETTINGS[service]
    module = importlib.import_module(ref.module)
    cls = getattr(module, ref.cls)
    assert isinstance(cls, type) and issubclass(cls, BaseSettings), f"{ref.module}.{ref.cls} is not a settings class"
    assert cls.model_config.get("env_prefix") == ref.prefix, f"{ref.cls} must read {ref.prefix}*"
    return cls


def allowed_env(service: str) -> set[str]:
    return set(env_names(settings_class(service)))


def app_service_of(compose_service: str) -> str | None:
    """``contacts`` for ``contacts`` and ``migrate-contacts``; ``None`` for nats and postgres."""
    name = compose_service.removeprefix("migrate-")
    return name if name in SETTINGS else None
