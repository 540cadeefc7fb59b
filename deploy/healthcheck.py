"""Container healthcheck: exit 0 when the service's ``/readyz`` answers 200, 1 otherwise.

``python deploy/healthcheck.py [URL]``. Without a URL (the image's HEALTHCHECK, shared by the four
services) it probes the ``--port`` that the container's main process (uvicorn, PID 1) was started with.
Standard library only: the image has no curl or wget.
"""

from __future__ import annotations

import itertools
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORT = 8000


def main_process_port(cmdline: Path = Path("/proc/1/cmdline")) -> int:
    try:
        args = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return DEFAULT_PORT
    for flag, value in itertools.pairwise(args):
        if flag == "--port" and value.isdigit():
            return int(value)
    return DEFAULT_PORT


def main(argv: list[str]) -> int:
    url = argv[1] if len(argv) > 1 else f"http://127.0.0.1:{main_process_port()}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
