"""The policy editor's form: a stored policy split into controls and a JSON rest, put back together unchanged, and
the API's refusals shown beside the control they concern."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.console import policy_form
from gateway.console.policy_form import PolicyForm, errors_by_field, merge, split

SHIPPED = Path(__file__).resolve().parents[1] / "services" / "followups" / "policies"


def _as_posted(form: PolicyForm) -> PolicyForm:
    """The form as a browser would post it back untouched (the blank new-step row included)."""
    single = {**form.values, "rest": form.rest, "step_count": str(len(form.steps) + 1)}
    for index, step in enumerate(form.steps):
        single.update({f"step-{index}-{k}": v for k, v in step.items()})
    return policy_form.from_post(single, form.ticked)


@pytest.mark.parametrize("path", sorted(SHIPPED.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_policy_comes_back_unchanged_through_the_form(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    merged, rows = merge(_as_posted(split(document)), policy_id=document["id"])
    assert merged == policy_form.without_nulls({k: v for k, v in document.items() if k != "enabled"})
    assert rows == list(range(len(document["steps"])))


def test_the_json_view_has_no_null_noise_but_keeps_quiet_hours_off() -> None:
    stored: dict[str, Any] = {
        "id": "p", "name": "P", "quiet_hours": None, "trigger": {"event": "interaction.logged", "quiet_for": None,
        "all": {"type": ["purchase"], "channel": None, "csat_max": None}, "any": []},
        "steps": [{"id": "a", "reason": "r", "offset": "P2D", "trigger": None, "closing": None}],
    }  # fmt: skip
    form = split(stored)
    rest = json.loads(form.rest)
    assert "null" not in form.rest.replace('"quiet_hours": null', "")
    assert rest == {"quiet_hours": None, "trigger": {"any": []}}
    assert form.ticked["trigger_type"] == ["purchase"] and form.steps[0]["offset"] == "P2D"


def test_steps_added_and_removed_in_the_form_keep_their_json_details_in_line() -> None:
    stored = {
        "name": "P", "trigger": {"event": "interaction.logged"},
        "steps": [{"id": "a", "reason": "first", "offset": "P1D", "business_time": True},
                  {"id": "b", "reason": "second", "offset": "P2D", "closing": {"closes_from": "P1D"}}],
    }  # fmt: skip
    posted = _as_posted(split(stored))
    posted.steps[0]["remove"] = "yes"
    posted.steps[2].update({"id": "c", "reason": "third", "offset": "P3D"})
    merged, rows = merge(posted, policy_id="p")
    assert merged["steps"] == [
        {"id": "b", "reason": "second", "offset": "P2D", "closing": {"closes_from": "P1D"}},
        {"id": "c", "reason": "third", "offset": "P3D"},
    ]
    assert rows == [1, 2]
    # The API names the merged document's step 1: the form's row 2 shows it.
    refusal = {"errors": [{"loc": ["body", "steps", 1, "offset"], "msg": "Value error, not an ISO 8601 duration"}]}
    assert errors_by_field(refusal, rows, "Invalid") == {"step-2-offset": "not an ISO 8601 duration"}


def test_broken_json_is_refused_before_anything_is_sent() -> None:
    form = split({"name": "P", "trigger": {"event": "interaction.logged"}, "steps": []})
    form.rest = '{"closing": {"on_reply": "complete",}}'
    with pytest.raises(policy_form.RestInvalid, match=r"line 1, column"):
        merge(form, policy_id="p")
    form.rest = "[1, 2]"
    with pytest.raises(policy_form.RestInvalid, match="object"):
        merge(form, policy_id="p")


@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        ({"errors": [{"loc": ["body", "name"], "msg": "too short"}]}, {"name": "too short"}),
        ({"errors": [{"loc": ["body", "trigger", "all", "type", 0], "msg": "bad type"}]}, {"trigger_type": "bad type"}),
        ({"errors": [{"loc": ["body", "channel", "fallback", 1], "msg": "bad"}]}, {"channel_fallback": "bad"}),
        ({"errors": [{"loc": ["body", "trigger"], "msg": "a contact.quiet trigger needs quiet_for"}]},
         {"quiet_for": "a contact.quiet trigger needs quiet_for"}),
        ({"errors": [{"loc": ["body", "escalation", "levels", 0, "after"], "msg": "bad"}]},
         {"rest": "escalation.levels[0].after: bad"}),
        ({"detail": "no team 'x'", "field": "assign.team"}, {"assign_team": "no team 'x'"}),
        ({"detail": "not a handle", "field": "escalation.levels[0].assignee"},
         {"rest": "escalation.levels[0].assignee: not a handle"}),
        ({"detail": "down"}, {"": "fallback"}),
    ],
)  # fmt: skip
def test_refusals_land_beside_their_control(problem: dict[str, Any], expected: dict[str, str]) -> None:
    assert errors_by_field(problem, [0], "fallback") == expected


@pytest.mark.parametrize("key", sorted(policy_form.TEMPLATES))
def test_every_template_is_a_valid_policy_for_the_follow_ups_service(key: str) -> None:
    from services.followups.rules import PolicyDocument

    form = _as_posted(split(policy_form.TEMPLATES[key]["document"]))
    document, _ = merge(form, policy_id=f"my-{key}")
    assert PolicyDocument.model_validate(document).id == f"my-{key}"
