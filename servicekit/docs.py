"""Generates the README's configuration table (from the settings classes) and event catalogue, and the table of
stories in docs/followups.md (from the docstrings of tests/stories).

python -m servicekit.docs          # rewrite README.md between the markers
python -m servicekit.docs --check  # exit 1 if README.md is stale (a test runs this)
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import sys
from pathlib import Path

from pydantic_settings import BaseSettings

from servicekit.catalogue import render_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
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


_INCLUDE = re.compile(r"<!-- include (?P<path>[\w./-]+) level=(?P<level>\d) -->\n.*?<!-- end include -->", re.S)


def _shift_headings(markdown: str, level: int) -> str:
    """Re-level a fragment's headings so its top heading sits at ``level`` (code blocks left alone)."""
    lines = markdown.splitlines()
    in_code = False
    levels = []
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"^(#+) ", line)):
            levels.append(len(match.group(1)))
    shift = level - min(levels) if levels else 0
    out, in_code = [], False
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"^(#+) ", line)):
            line = "#" * max(1, min(6, len(match.group(1)) + shift)) + line[len(match.group(1)) :]
        out.append(line)
    return "\n".join(out).strip() + "\n"


def _include(match: re.Match[str]) -> str:
    path, level = match.group("path"), int(match.group("level"))
    body = _shift_headings((ROOT / path).read_text(), level)
    # Links relative to the fragment's folder must stay right from the README at the root.
    folder = str(Path(path).parent)
    body = re.sub(r"\]\((?!https?:|/|#|mailto:)([^)]+)\)", lambda m: f"]({folder}/{m.group(1)})", body)
    return f"<!-- include {path} level={level} -->\n{body}<!-- end include -->"


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


def render_readme(text: str) -> str:
    text = _replace(text, "config", render_config_table())
    text = _replace(text, "events", render_markdown())
    return _INCLUDE.sub(_include, text)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stories_doc = STORIES_DOC.read_text()
    stories_wanted = render_stories_doc(stories_doc)
    if not args.check:
        STORIES_DOC.write_text(stories_wanted)  # first: the README includes it
    current = README.read_text()
    wanted = render_readme(current)
    if args.check:
        if current != wanted or stories_doc != stories_wanted:
            print("README.md or docs/followups.md is stale: run `python -m servicekit.docs`", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
