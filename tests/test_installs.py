"""The Makefile installs from uv.lock: `make up` what running needs, `make test` the test tools too, and
again when pyproject.toml or uv.lock change (read from `make -n`: what make would run, nothing is run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from servicekit.testing import missing_tool

ROOT = Path(__file__).resolve().parents[1]
_PINNED_UV = re.search(r"^UV_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
assert _PINNED_UV is not None, "the Makefile pins uv (UV_VERSION)"
UV_VERSION = _PINNED_UV[1]


def make_would_run(*args: str, venv: Path, tools: Path) -> list[str]:
    if shutil.which("make") is None:
        missing_tool("make", "apt-get install make")
    # Not the flags and variables of a `make test` this test may run under.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    result = subprocess.run(
        ["make", "-n", *args, f"VENV={venv}", f"TOOLS={tools}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return re.sub(r"\\\n\s*", " ", result.stdout).splitlines()  # a recipe's continued lines as one


def syncs(lines: list[str]) -> list[str]:
    return [line for line in lines if "/uv sync " in line]


@pytest.mark.parametrize("target", ["up", "demo", "migrate"])
def test_running_installs_from_the_lock_without_the_test_tools(tmp_path: Path, target: str) -> None:
    lines = make_would_run("-B", target, venv=tmp_path / "venv", tools=tmp_path / "tools")
    [sync] = syncs(lines)
    assert "--locked" in sync and "--no-dev" in sync, sync
    # uv itself: pinned, from the package index, into the tools venv.
    assert any(line.endswith(f"pip install --quiet 'uv=={UV_VERSION}'") for line in lines), lines


@pytest.mark.parametrize("target", ["install", "test", "lint", "bench", "faults", "fuzz"])
def test_testing_installs_from_the_lock_with_the_test_tools(tmp_path: Path, target: str) -> None:
    lines = make_would_run("-B", target, venv=tmp_path / "venv", tools=tmp_path / "tools")
    [sync] = syncs(lines)
    assert "--locked" in sync and "--no-dev" not in sync and "--only-dev" not in sync, sync


def test_an_edited_pyproject_or_lock_installs_again(tmp_path: Path) -> None:
    venv, tools = tmp_path / "venv", tmp_path / "tools"
    venv.mkdir()
    tools.mkdir()
    for stamp in (tools / f".uv-{UV_VERSION}", venv / ".synced-run", venv / ".synced-dev"):
        stamp.touch()  # newer than every file of the checkout: installed
    for target in ("install", "install-run"):
        assert not syncs(make_would_run(target, venv=venv, tools=tools)), f"{target}: nothing changed"
        for edited in ("pyproject.toml", "uv.lock"):
            [sync] = syncs(make_would_run("-W", edited, target, venv=venv, tools=tools))
            assert "--locked" in sync, sync


def test_the_lowest_versions_are_resolved_apart_from_the_lock(tmp_path: Path) -> None:
    lines = make_would_run("-B", "test-lowest", venv=tmp_path / "venv", tools=tmp_path / "tools")
    [compile_] = [line for line in lines if " pip compile " in line]
    assert "--resolution lowest-direct" in compile_ and "--group pyproject.toml:dev" in compile_
    assert " .venv-lowest/" in compile_ and "uv.lock" not in compile_
    assert not syncs(lines), "the project venv and uv.lock are left alone"
    [pytest_line] = [line for line in lines if " -m pytest " in line]
    for suite in ("stack", "fuzz", "browser", "faults"):
        assert f"not {suite}" in pytest_line, pytest_line


def test_the_test_install_fetches_axe_core_exactly_as_locked(tmp_path: Path) -> None:
    """axe-core for the accessibility test: `npm ci` (the lock, never a re-resolve) into git-ignored node_modules."""
    lines = make_would_run("-B", "install", venv=tmp_path / "venv", tools=tmp_path / "tools")
    assert any("npm ci --prefix tests/browser" in line for line in lines), lines
    assert (ROOT / "tests" / "browser" / "package-lock.json").is_file()
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "tests/browser/node_modules/axe-core"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, "node_modules must be git-ignored"
