"""Print the runtime dependencies of pyproject.toml, one per line (for ``pip install -r``).

The image's dependency layer is built from this list alone, so it is rebuilt only when pyproject.toml
changes, not when the code does. ``--exclude NAME`` drops a package the containers do not need.
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path


def dependencies(pyproject: Path, exclude: set[str]) -> list[str]:
    with pyproject.open("rb") as f:
        declared: list[str] = tomllib.load(f)["project"]["dependencies"]
    name = re.compile(r"^[A-Za-z0-9._-]+")
    return [d for d in declared if (m := name.match(d)) is None or m.group(0).lower() not in exclude]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("pyproject", type=Path, nargs="?", default=Path("pyproject.toml"))
    parser.add_argument("--exclude", action="append", default=[], help="package name to leave out")
    args = parser.parse_args()
    print("\n".join(dependencies(args.pyproject, {e.lower() for e in args.exclude})))


if __name__ == "__main__":
    main()
