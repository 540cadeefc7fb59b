"""The README is generated in part from the code: it must say what the code does."""

from servicekit.docs import README, render_readme, settings_classes


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
