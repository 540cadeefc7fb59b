"""The service dashboard in a real Chromium over the demo shop: filters by team, agent and channel that agree with the
metrics API, touchpoints per channel over time, first response beside the response-SLA policy's targets, complaints
said plainly, labels that never clip at laptop and phone width, and tiles that open the list behind them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from gateway.console import labels
from tests.browser.conftest import SIZES, Console, screenshot, unlabelled_controls
from tests.browser.test_console_browser import sign_in

pytestmark = [pytest.mark.stack, pytest.mark.browser]


def half_year() -> tuple[str, str]:
    today = datetime.now(UTC).date()
    return (today - timedelta(days=179)).isoformat(), today.isoformat()


def metrics(console: Console, **params: str) -> dict[str, Any]:
    since, until = params.pop("since"), params.pop("until")
    day = timedelta(days=1)
    window = {"since": f"{since}T00:00:00+00:00", "until": (datetime.fromisoformat(until) + day).isoformat() + "+00:00"}
    with console.api() as http:
        answer = http.get("/api/v1/metrics/service", params={**window, **params})
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
    return found


@pytest.fixture(scope="module")
def page(console: Console, chromium: Any) -> Any:
    opened = chromium().new_page()
    sign_in(opened, console, console.agent)
    return opened


def tile(page: Any, name: str) -> Any:
    return page.locator(f"a[data-tile='{name}']")


def test_the_dashboard_draws_the_service_quality_of_the_demo_shop(console: Console, page: Any) -> None:
    since, _ = half_year()
    page.goto(f"{console.url}/dashboard")
    page.get_by_label("From", exact=True).fill(since)
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"since=" + since))
    assert page.get_by_role("alert").count() == 0
    csat = tile(page, "csat").locator(".figure").inner_text()
    assert 1.0 <= float(csat) <= 5.0  # the demo's survey responses, averaged by the interactions service
    assert page.get_by_role("img", name="Average CSAT per period, 1 to 5").locator("circle").count() >= 1
    assert page.get_by_role("list", name="First response p50 and p90 per channel").locator("li").count() >= 2
    assert page.get_by_role("list", name="Follow-up counts").locator("li").count() >= 4
    screenshot(page, "dashboard")


def worked(console: Console, since: str) -> tuple[str, str, str]:
    """A demo agent's reply in the period: their handle, team and the channel (so the filtered figures are not 0)."""
    with console.api() as http:
        replies = http.get(
            "/api/v1/interactions", params={"direction": "outbound", "since": f"{since}T00:00:00Z", "limit": 200}
        ).json()["items"]
    reply = next(r for r in replies if r.get("agent") and r.get("team"))
    return reply["agent"], reply["team"], reply["channel"]


def test_filters_by_team_agent_and_channel_agree_with_the_metrics_api(console: Console, page: Any) -> None:
    since, until = half_year()
    agent, team, channel = worked(console, since)
    page.goto(f"{console.url}/dashboard")
    page.get_by_label("From", exact=True).fill(since)
    page.get_by_label("To", exact=True).fill(until)
    page.get_by_label("Team", exact=True).select_option(team)
    page.get_by_label("Agent", exact=True).select_option(agent)
    page.get_by_label("Channel", exact=True).select_option(channel)
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"channel=" + channel))
    query = parse_qs(urlsplit(page.url).query)
    assert query == {"since": [since], "until": [until], "team": [team], "agent": [agent], "channel": [channel]}
    # The form says what is shown, and the figures are the API's for exactly that.
    assert page.get_by_label("Agent", exact=True).input_value() == agent
    assert page.get_by_label("Team", exact=True).input_value() == team
    scoped = metrics(console, since=since, until=until, team=team, agent=agent, channel=channel)
    everyone = metrics(console, since=since, until=until)
    assert scoped["agent"] == agent and scoped["sources"]["interactions"]["total"] > 0
    assert scoped["sources"]["interactions"]["total"] < everyone["sources"]["interactions"]["total"]
    assert set(scoped["sources"]["interactions"]["by_channel"]) == {channel}
    overdue = tile(page, "overdue").locator(".figure").inner_text()
    assert int(overdue) == scoped["followups"]["open_overdue"]
    complaints = tile(page, "complaints").inner_text()
    assert f"{scoped['complaints']['opened']} complaint" in complaints
    # Each tile's list keeps the filters: the queue opens on this team, agent and channel.
    for name in ("csat", "nps", "complaints", "sla", "overdue", "retention", "pareto"):
        href = str(tile(page, name).get_attribute("href"))
        link = parse_qs(urlsplit(href).query)
        assert href.startswith("/queue?"), href
        assert link["team"] == [team] and link["assignee"] == [agent] and link["channel"] == [channel], href
    page.get_by_role("link", name="Everyone").click()
    page.wait_for_url(re.compile(r"/dashboard\?since="))
    assert page.get_by_label("Agent", exact=True).input_value() == ""


def test_volume_per_channel_and_the_reply_target_of_the_sla_policy(console: Console, page: Any) -> None:
    since, until = half_year()
    page.goto(f"{console.url}/dashboard?since={since}&until={until}")
    everyone = metrics(console, since=since, until=until)
    volume = page.get_by_role("img", name="Touchpoints per channel in each period, stacked")
    drawn = volume.locator("rect").evaluate_all("rects => rects.map(r => r.querySelector('title').textContent)")
    # Each period's count per channel, summed over the periods, is the half year's count per channel.
    counted: dict[str, int] = {}
    for title in drawn:
        n, channel = re.fullmatch(r".+: (\d+) (.+)", title).groups()  # type: ignore[union-attr]
        counted[channel] = counted.get(channel, 0) + int(n)
    expected = {labels.channel(c): n for c, n in everyone["sources"]["interactions"]["by_channel"].items() if n}
    assert counted == expected
    legend = page.get_by_role("list", name="Channels").get_by_role("listitem").all_inner_texts()
    assert sorted(legend) == sorted(expected)

    with console.api() as http:
        policy = http.get("/api/v1/policies/response-sla").json()
    targets = policy["document"]["steps"][0]["offset_by_channel"]
    rows = page.get_by_role("list", name="First response p50 and p90 per channel").get_by_role("listitem")
    assert rows.count() == len(everyone["first_response"]) > 0
    checked = 0
    for n in range(rows.count()):
        row = rows.nth(n)
        channel = next(c for c in labels.CHANNELS if labels.channel(c) == row.locator(".bar-label").inner_text())
        if channel not in targets:  # the policy owes no reply time on this channel: no target drawn
            assert "target" not in row.locator(".bar-value").inner_text() and row.locator("line.target").count() == 0
            continue
        seconds = {"PT5M": 300, "PT1H": 3600, "PT4H": 4 * 3600, "PT24H": 86400}[targets[channel]]
        assert f"target {labels.duration(seconds)}" in row.locator(".bar-value").inner_text()
        assert row.locator("line.target").count() == 1
        p90 = everyone["first_response"][channel]["p90_s"]
        assert ("p90 over target" in row.inner_text()) == (p90 > seconds)
        checked += 1
    assert checked >= 2  # the demo shop answers email and chat on threads


def test_complaints_are_said_plainly(console: Console, page: Any) -> None:
    since, until = half_year()
    page.goto(f"{console.url}/dashboard?since={since}&until={until}")
    figures = metrics(console, since=since, until=until)["complaints"]
    text = " ".join(tile(page, "complaints").inner_text().split())
    opened, resolved = figures["opened"], figures["resolved"]
    assert f"{opened} new" in text
    assert f"{opened} complaint{'s' * (opened != 1)} opened, {resolved} resolved in this period" in text
    assert ("some opened earlier" in text) == (resolved > opened)


CLIPPED = """root => {
    const inside = (inner, outer) => inner.left >= outer.left - 1 && inner.right <= outer.right + 1
        && inner.top >= outer.top - 1 && inner.bottom <= outer.bottom + 1;
    const found = [];
    for (const el of root.querySelectorAll('h1, h2, label, .tile span, .bar-label, .bar-value, .legend li, .muted')) {
        const box = el.getBoundingClientRect();
        if (!box.width) continue;
        if (el.scrollWidth > el.clientWidth + 1) found.push(['overflows', el.textContent.trim()]);
        const holder = el.closest('.card, form, .dashboard');
        if (!inside(box, holder.getBoundingClientRect())) found.push(['outside its card', el.textContent.trim()]);
    }
    for (const text of root.querySelectorAll('svg text')) {
        if (!inside(text.getBoundingClientRect(), text.closest('svg').getBoundingClientRect()))
            found.push(['outside its chart', text.textContent.trim()]);
    }
    if (document.documentElement.scrollWidth > window.innerWidth) {
        const wide = [...document.body.querySelectorAll('*')]
            .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1);
        found.push(['page scrolls sideways', wide.slice(-3).map(e => e.outerHTML.slice(0, 100)).join(' | ')]);
    }
    return found;
}"""


@pytest.mark.parametrize("size", list(SIZES))
def test_no_label_is_clipped(console: Console, page: Any, size: str) -> None:
    since, until = half_year()
    width, height = SIZES[size]
    page.set_viewport_size({"width": width, "height": height})
    agent, team, _ = worked(console, since)
    for query in (f"since={since}&until={until}", f"since={since}&until={until}&team={team}&agent={agent}", ""):
        page.goto(f"{console.url}/dashboard?{query}")
        assert page.locator(".bar-value").count() > 0  # there are labels to check
        assert page.locator(".dashboard").evaluate(CLIPPED) == [], query
        assert unlabelled_controls(page) == []
    page.set_viewport_size({"width": 1280, "height": 800})


def test_a_tile_opens_the_list_behind_it(console: Console, page: Any) -> None:
    page.goto(f"{console.url}/dashboard")
    tile(page, "overdue").click()
    page.wait_for_url(re.compile(r"/queue\?tab=overdue"))
    assert page.get_by_role("heading", name="Follow-ups", level=1).is_visible()
    page.go_back()
    tile(page, "complaints").focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/queue\?.*policy=complaint-callback"))
