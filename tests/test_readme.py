"""The README is generated in part from the code: it must say what the code does."""

from servicekit.docs import README, ROOT, STORIES_DOC, render_readme, render_stories_doc, settings_classes, stories


def test_readme_is_current_with_settings_catalogue_and_docs() -> None:
    current = README.read_text()
    assert current == render_readme(current), "README.md is stale: run `python -m servicekit.docs`"


def test_readme_leads_with_the_two_commands_and_lists_every_setting() -> None:
    text = README.read_text()
    head = text[: text.index("## What Touchpoint is")]
    assert "make up" in head and "make test" in head
    assert [name for name, _ in settings_classes()] == ["contacts", "interactions", "followups", "gateway"]
    for _, settings_class in settings_classes():
        prefix = str(settings_class.model_config.get("env_prefix", ""))
        for field in settings_class.model_fields:
            assert f"`{prefix}{field}`".upper().replace("`", "") in text.replace("`", ""), field


def test_the_stories_table_of_docs_followups_is_current_and_each_story_names_its_policy() -> None:
    current = STORIES_DOC.read_text()
    assert current == render_stories_doc(current), "docs/followups.md is stale: run `python -m servicekit.docs`"
    told = stories()
    assert len(told) >= 25
    policies = {path.stem for path in (ROOT / "services/followups/policies").glob("*.yaml")}
    for story in told:
        assert any(policy in story["policy"] for policy in policies), story
