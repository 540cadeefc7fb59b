"""The release: .github/workflows/release.yml against GitHub's workflow schema (check-jsonschema's vendored
copy, offline), what it builds and attaches, and the image tag compose and Kubernetes run = pyproject's version."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.deploy_support import compose
from tests.test_deploy_compose import CHECK_JSONSCHEMA
from tests.test_deploy_kubernetes import kustomization

WORKFLOW = compose.ROOT / ".github" / "workflows" / "release.yml"
VERSION = tomllib.loads((compose.ROOT / "pyproject.toml").read_text())["project"]["version"]


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_workflow_matches_githubs_schema(tmp_path: Path) -> None:
    result = validate(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check refuses what GitHub would refuse (a misspelt key), so the pass above means something.
    broken = WORKFLOW.read_text().replace("runs-on:", "run-on:")
    (tmp_path / "release.yml").write_text(broken)
    refused = validate(tmp_path / "release.yml")
    assert refused.returncode != 0, refused.stdout


def steps_using(workflow: dict[str, Any], action: str) -> list[dict[str, Any]]:
    steps = [step for job in workflow["jobs"].values() for step in job["steps"]]
    return [step for step in steps if step.get("uses", "").split("@")[0] == action]


def test_a_version_tag_builds_the_locked_image_pushes_it_with_its_version_and_an_sbom() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    # PyYAML reads the key `on` as True (YAML 1.1).
    assert workflow[True]["push"]["tags"] == ["v*.*.*"]
    assert workflow["permissions"]["packages"] == "write"
    [build] = steps_using(workflow, "docker/build-push-action")
    assert build["with"]["file"] == "deploy/Dockerfile" and build["with"]["push"] is True
    assert build["with"]["sbom"] is True
    # The Dockerfile installs from the lock (tests/test_deploy_dockerfile.py checks `uv sync --locked`).
    assert "uv sync --locked" in (compose.ROOT / "deploy" / "Dockerfile").read_text()
    [meta] = steps_using(workflow, "docker/metadata-action")
    assert meta["with"]["images"] == "ghcr.io/${{ github.repository_owner }}/touchpoint"
    assert "type=semver,pattern={{version}}" in meta["with"]["tags"]
    [sbom] = steps_using(workflow, "anchore/sbom-action")
    assert sbom["with"]["format"] == "spdx-json"
    release = WORKFLOW.read_text()
    assert 'gh release create "$GITHUB_REF_NAME" "touchpoint-$VERSION.spdx.json"' in release
    # A tag that is not pyproject's version releases nothing.
    assert '"v$version" != "$GITHUB_REF_NAME"' in release
    for step in (*steps_using(workflow, "actions/checkout"), build, meta, sbom):
        assert "@" in step["uses"], f"{step['uses']}: pinned to a version"


def test_compose_and_kubernetes_run_the_release_of_pyprojects_version() -> None:
    image = f"ghcr.io/touchpoint-crm/touchpoint:{VERSION}"
    raw = compose.COMPOSE_FILE.read_text()
    assert "latest" not in raw
    services = compose.load(compose.read_env_file(compose.ENV_EXAMPLE))["services"]
    built = {name: s["image"] for name, s in services.items() if "build" in s}
    assert built and set(built.values()) == {image}, built
    # Without .env too: compose's own default is the same tag.
    assert raw.count(f"${{TOUCHPOINT_IMAGE:-{image}}}") == 2
    for step in ("migrations", "services"):
        [entry] = kustomization(step)["images"]
        assert f"{entry['newName']}:{entry['newTag']}" == image, step
