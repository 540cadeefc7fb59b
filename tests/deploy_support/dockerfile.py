"""deploy/Dockerfile and .dockerignore, read the way docker build reads them (enough for our file)."""

from __future__ import annotations

import fnmatch
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(path: Path = DOCKERFILE) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and the stages: instructions with continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), flags=re.IGNORECASE)
            assert match is not None, line
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), match.group(1))
            stages.append(Stage(base=base, name=match.group(2)))
        elif not stages:
            assert keyword == "ARG", f"only ARG may precede FROM: {line}"
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


def dockerignore_includes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches decides (``!`` re-includes)."""
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").rstrip("/")
        candidates = [glob, f"{glob}/*"] if not glob.startswith("**/") else [glob[3:], f"*/{glob[3:]}", f"{glob}/*"]
        if any(fnmatch.fnmatch(path, c) or fnmatch.fnmatch(path, f"*/{c}") for c in candidates):
            included = negated
    return included


def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def context_copies(stage: Stage) -> list[tuple[str, str]]:
    """(source, destination) of a stage's COPY instructions that read the build context."""
    copies = []
    for args in stage.all("COPY"):
        if args.startswith("--from="):
            continue
        *sources, destination = args.split()
        copies += [(source, destination) for source in sources]
    return copies


def stage_workdir(target: Path) -> Path:
    """The final stage's WORKDIR as the image holds it: each COPY from the build context, less what
    .dockerignore keeps out of the context."""
    _, stages = parse()
    patterns = dockerignore_patterns()
    for source, destination in context_copies(stages[-1]):
        origin = ROOT / source
        into = target / destination.rstrip("/")
        if origin.is_file():
            if dockerignore_includes(source, patterns):
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, into)
            continue
        for path in origin.rglob("*"):
            relative = path.relative_to(ROOT).as_posix()
            if path.is_file() and dockerignore_includes(relative, patterns):
                destination_file = into / path.relative_to(origin)
                destination_file.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination_file)
    return target
