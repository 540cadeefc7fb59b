"""Generates the parts of docs/ that the code decides: the configuration table of docs/configuration.md (from
the settings classes), the event catalogue of docs/events.md (from servicekit.catalogue) and the table of stories
in docs/followups.md (from the docstrings of tests/stories). The README links to them.

python -m servicekit.docs          # rewrite each document between its markers
python -m servicekit.docs --check  # exit 1 if any is stale (tests/test_readme.py checks the same)
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic_settings import BaseSettings

from servicekit.catalogue import render_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
EVENTS_DOC = ROOT / "docs" / "events.md"
STORIES = ROOT / "tests" / "stories"
STORIES_DOC = ROOT / "docs" / "followups.md"
_STORY = re.compile(
    r"^Policy: (?P<policy>.+?)\.\s+Given (?P<given>.+?)\s*when (?P<when>.+?)\s*then (?P<then>.+)$", re.S
)

SETTINGS_CLASSES = [
    ("contacts", "services.contacts.settings", "ContactsSettings"),
    ("interactions", "services.interactions.settings", "InteractionsSettings"),
    ("followups", "services.followups.settings", "FollowupsSettings"),
    ("gateway", "gateway.settings", "GatewaySettings"),
]


def settings_classes() -> list[tuple[str, type[BaseSettings]]]:
    """Every service's settings class: the single source of truth for environment variables."""
    found = []
    for service, module_name, class_name in SETTINGS_CLASSES:
        module_path = ROOT / (module_name.replace(".", "/") + ".py")
        if not module_path.exists():
            continue
        module = importlib.import_module(module_name)
        found.append((service, getattr(module, class_name)))
    return found


def env_names(settings_class: type[BaseSettings]) -> dict[str, str]:
    """Environment variable name → field name, aliases included."""
    prefix = str(settings_class.model_config.get("env_prefix", ""))
    names = {}
    for name, info in settings_class.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            names[alias.upper()] = name
        elif alias is not None and hasattr(alias, "choices"):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names[choice.upper()] = name
            names.setdefault(f"{prefix}{name}".upper(), name)
        else:
            names[f"{prefix}{name}".upper()] = name
    return names


def render_config_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for service, settings_class in settings_classes():
        for env, field_name in env_names(settings_class).items():
            info = settings_class.model_fields[field_name]
            default = "" if info.is_required() else repr(info.default) if info.default is not None else "(unset)"
            if "key" in field_name.lower() or "secret" in field_name.lower():
                default = "(see text)" if default not in ("", "(unset)") else default
            rows.append(f"| `{env}` | `{default}` | {service}: {info.description or ''} |".replace("``", "(none)"))
    return "\n".join(rows) + "\n"


def _replace(text: str, marker: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"the document lacks the <!-- {marker}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def stories() -> list[dict[str, str]]:
    """Each story of tests/stories: its file and test, policy, and given / when / then, from its docstring
    (``Policy: <name>.`` then ``Given …, when …, then …``)."""
    found = []
    for path in sorted(STORIES.glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef) or not node.name.startswith("test_"):
                continue
            doc = " ".join((ast.get_docstring(node) or "").split())
            match = _STORY.match(doc)
            if match is None:
                raise ValueError(
                    f"{path.name}::{node.name}: a story's docstring reads 'Policy: …. Given …, when …, then …'"
                )
            found.append({"file": path.name, "test": node.name, **{k: v.strip() for k, v in match.groupdict().items()}})
    return found


def render_stories_table() -> str:
    rows = ["| story | policy | given | when | then |", "|---|---|---|---|---|"]
    for story in stories():
        title = story["test"].removeprefix("test_").replace("_", " ").capitalize()
        cells = [f"{title} (`{story['file']}`)", story["policy"], story["given"].rstrip(","), story["when"].rstrip(","),
                 story["then"]]  # fmt: skip
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


def render_stories_doc(text: str) -> str:
    return _replace(text, "stories", render_stories_table())


def render_configuration_doc(text: str) -> str:
    return _replace(text, "config", render_config_table())


def render_events_doc(text: str) -> str:
    return _replace(text, "events", render_markdown())


# Each generated document and what renders it; a document's hand-written text outside its markers is kept.
GENERATED: dict[Path, Callable[[str], str]] = {
    CONFIGURATION_DOC: render_configuration_doc,
    EVENTS_DOC: render_events_doc,
    STORIES_DOC: render_stories_doc,
}


def stale_documents() -> list[Path]:
    return [path for path, render in GENERATED.items() if path.read_text() != render(path.read_text())]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if args.check:
        stale = stale_documents()
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run `python -m servicekit.docs`", file=sys.stderr)
        return 1 if stale else 0
    for path, render in GENERATED.items():
        path.write_text(render(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
