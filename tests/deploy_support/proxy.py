"""The Caddy reverse proxy in front of the gateway, run locally: the committed Caddyfile with only its
addresses (and, where a test says so, a timeout) moved to free local ports."""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

from tests.deploy_support.compose import ROOT

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
KUBERNETES_CADDYFILE = ROOT / "deploy" / "kubernetes" / "services" / "Caddyfile"
COMPOSE_TLS = "tls {$TOUCHPOINT_TLS:internal}"
KUBERNETES_TLS = "tls /etc/touchpoint-tls/tls.crt /etc/touchpoint-tls/tls.key"
UPSTREAM = "reverse_proxy gateway:8000"


def caddy_binary() -> str | None:
    return shutil.which("caddy")


def caddy_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=30).stdout
    found = re.match(r"v?(\d+)\.(\d+)", out.strip())
    assert found is not None, out
    return int(found.group(1)), int(found.group(2))


def local_caddyfile(
    text: str,
    *,
    upstream: str,
    admin_port: int,
    http_port: int,
    https_port: int,
    timeouts: dict[str, str] | None = None,
) -> str:
    """The Caddyfile with the admin API, the HTTP and HTTPS ports and the gateway's address on local ports."""
    substitutions = [
        ("admin localhost:2019", f"admin 127.0.0.1:{admin_port}\n\thttp_port {http_port}\n\thttps_port {https_port}"),
        (UPSTREAM, f"reverse_proxy {upstream}"),
    ]
    for old, new in substitutions:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    for name, value in (timeouts or {}).items():
        text, count = re.subn(rf"(?m)^(\s*{name}\s+)\S+$", rf"\g<1>{value}", text)
        assert count == 1, name
    return text


def caddy_env(home: Path, **variables: str) -> dict[str, str]:
    """Caddy's data (its CA, certificates) and config under ``home``; the Caddyfile's variables."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        **variables,
    }


def root_certificate(home: Path) -> Path:
    """The root of Caddy's own CA (``tls internal``), as ``caddy_env`` places it."""
    return home / "data" / "caddy" / "pki" / "authorities" / "local" / "root.crt"


def trusting(home: Path) -> ssl.SSLContext:
    """A client TLS context that trusts Caddy's own CA only."""
    return ssl.create_default_context(cafile=str(root_certificate(home)))


def adapt(binary: str, path: Path, env: dict[str, str]) -> dict[str, Any]:
    """The JSON configuration Caddy makes of a Caddyfile (``caddy adapt``: parsed, nothing provisioned)."""
    result = subprocess.run(
        [binary, "adapt", "--config", str(path), "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    adapted = json.loads(result.stdout)
    assert isinstance(adapted, dict)
    return adapted
