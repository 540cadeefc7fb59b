"""The README's five-minute tour, run as written (bash, curl, jq) against the whole stack as real processes.

Only the gateway's address and the admin key are swapped for the test stack's. Each paragraph of the tour runs
in one bash session, in order; a paragraph that only reads is run again until what it shows has arrived,
because the follow-ups and the timeline are built from events a moment after the write (a reader typing the
next command never sees the gap)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from servicekit.devstack import DEV_ADMIN_KEY, Stack
from servicekit.docs import README
from servicekit.testing import missing_tool
from tests.whole_stack import running_stack

pytestmark = pytest.mark.stack

ADMIN_KEY = "tp_tour_admin_key_" + uuid.uuid4().hex
DONE = "__tour_paragraph_done__"

TIMELINE = [
    '"status":"completed","policy":"complaint-callback"',
    '"status":"cancelled","policy":"response-sla"',
    '"subject":"Parcel arrived damaged"',
    '"subject":"Replacement sent"',
]
# What each paragraph (found by the start of its comment) must print; read-only ones may be run again.
EXPECTED: dict[str, tuple[bool, list[str]]] = {
    "API=": (False, ['"status":"ready"']),
    "# admin: an API key": (False, []),
    "# ingest: a complaint": (False, [r'\{"id":"[0-9a-f-]{36}","contact_id":"[0-9a-f-]{36}"\} 201', r"\} 200"]),
    "# agent: find the customer": (True, ['"policy":"response-sla"', '"policy":"complaint-callback"']),
    "# agent: call back": (False, [r'"followup_id":"[0-9a-f-]{36}"']),
    "# agent: the customer's timeline": (True, TIMELINE),
    "# ingest may not read it": (False, ['"status":403', '"action":"timeline:read"']),
    "# admin: every contact as CSV": (True, ["Ada Lovelace,,ada@example.com", r'"complaints":\{"opened":1']),
}


def tour_paragraphs() -> list[str]:
    text = README.read_text()
    section = text[text.index("## A five-minute tour") :]
    block = section[section.index("```sh\n") + len("```sh\n") : section.index("\n```\n")]
    return [paragraph for paragraph in block.split("\n\n") if paragraph.strip()]


@pytest.fixture
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    with running_stack(
        admin_key=ADMIN_KEY, db_backend="sqlite", request=request, tmp_path=tmp_path, database_prefix="tour"
    ) as running:
        yield running


def test_every_paragraph_of_the_tour_has_its_expectation() -> None:
    paragraphs = tour_paragraphs()
    assert [next(key for key in EXPECTED if p.startswith(key)) for p in paragraphs] == list(EXPECTED)


def test_the_readme_tour_works_as_written(stack: Stack) -> None:
    for tool in ("bash", "curl", "jq"):
        if shutil.which(tool) is None:
            missing_tool(tool, f"apt-get install {tool}; .ci/run does")
    gateway_url = stack.services["gateway"].url
    shell = subprocess.Popen(
        ["bash", "--norc", "--noprofile"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert shell.stdin is not None and shell.stdout is not None

    def run(paragraph: str) -> str:
        assert shell.stdin is not None and shell.stdout is not None
        shell.stdin.write(f"{paragraph}\necho; echo {DONE} $?\n")
        shell.stdin.flush()
        lines: list[str] = []
        while not (line := shell.stdout.readline()).startswith(DONE):
            assert line, "bash ended mid-tour:\n" + "".join(lines)
            lines.append(line)
        assert line.split()[1] == "0", "".join(lines)
        return "".join(lines)

    try:
        for paragraph in tour_paragraphs():
            key = next(key for key in EXPECTED if paragraph.startswith(key))
            rereadable, wanted = EXPECTED[key]
            script = paragraph.replace("http://127.0.0.1:8000", gateway_url).replace(DEV_ADMIN_KEY, ADMIN_KEY)
            deadline = time.monotonic() + 20
            while True:
                output = run(script)
                missing = [pattern for pattern in wanted if not re.search(pattern, output)]
                if not missing or not rereadable or time.monotonic() > deadline:
                    break
                time.sleep(0.2)  # polling what the projections show: no event of theirs reaches a shell
            assert not missing, f"{key}: {missing} not in\n{output}"
    finally:
        shell.stdin.close()
        shell.wait(timeout=10)
