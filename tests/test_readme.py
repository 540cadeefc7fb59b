"""The README and docs/ are generated in part from the code: they must say what the code does, and every
link between them must lead somewhere."""

import re
from pathlib import Path

import pytest

from servicekit.docs import (
    CONFIGURATION_DOC,
    GENERATED,
    README,
    ROOT,
    STORIES_DOC,
    render_stories_doc,
    settings_classes,
    stories,
)

DOCS = sorted((ROOT / "docs").glob("*.md"))
_LINK = re.compile(r"\]\((?!https?:|mailto:|#)([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", list(GENERATED), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_generated_document_is_current(path: Path) -> None:
    current = path.read_text()
    assert current == GENERATED[path](current), f"{path.relative_to(ROOT)} is stale: run `python -m servicekit.docs`"


def test_readme_is_short_leads_with_the_two_commands_and_links_every_document() -> None:
    text = README.read_text()
    assert len(text.splitlines()) < 200
    head = text[: text.index("## What Touchpoint is")]
    assert "make up" in head and "make test" in head
    linked = set(_LINK.findall(text))
    for path in [*DOCS, ROOT / "LICENSE", ROOT / "CHANGELOG.md"]:
        assert str(path.relative_to(ROOT)) in linked, f"the README does not link {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(path: Path) -> None:
    in_code = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        for target in _LINK.findall(line):
            where = f"{path.relative_to(ROOT)}:{number}"
            assert (path.parent / target).exists(), f"{where} links {target}, which is not there"


def test_the_configuration_doc_lists_every_setting() -> None:
    text = CONFIGURATION_DOC.read_text().replace("`", "")
    assert [name for name, _ in settings_classes()] == ["contacts", "interactions", "followups", "gateway"]
    for _, settings_class in settings_classes():
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        for field in settings_class.model_fields:
            assert f"{prefix}{field}".upper() in text, field


def test_the_stories_table_of_docs_followups_is_current_and_each_story_names_its_policy() -> None:
    current = STORIES_DOC.read_text()
    assert current == render_stories_doc(current), "docs/followups.md is stale: run `python -m servicekit.docs`"
    told = stories()
    assert len(told) >= 25
    policies = {path.stem for path in (ROOT / "services/followups/policies").glob("*.yaml")}
    for story in told:
        assert any(policy in story["policy"] for policy in policies), story
