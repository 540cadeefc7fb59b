"""Keeps the generated parts of docs/gateway.md (role matrix, endpoints, settings) equal to the code.

python -m gateway.docs          # rewrite them
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from gateway.api import render_endpoints_markdown
from gateway.auth import render_matrix_markdown
from gateway.settings import GatewaySettings

DOC = Path(__file__).resolve().parents[1] / "docs" / "gateway.md"


def render_settings_markdown() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in GatewaySettings.model_fields.items():
        variable = "TOUCHPOINT_ADMIN_KEY" if name == "admin_key" else f"GATEWAY_{name.upper()}"
        default = field.default
        shown = "" if default is None else f"`{default}`"
        lines.append(f"| `{variable}` | {shown} | {field.description or ''} |")
    return "\n".join(lines) + "\n"


SECTIONS = {
    "roles": render_matrix_markdown,
    "endpoints": render_endpoints_markdown,
    "settings": render_settings_markdown,
}


def _replacement(generated: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group(1) + generated + m.group(2)


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:begin -->\n).*?(<!-- {name}:end -->)", re.S)
        text = pattern.sub(_replacement(make()), text)
    return text


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text()))
    print(f"written: {DOC}")
