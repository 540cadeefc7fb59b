"""A throwaway PgBouncer in front of a throwaway PostgreSQL cluster (Debian's ``pgbouncer`` package), as a child
process that dies with its parent (servicekit.processes)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from servicekit.processes import spawn
from servicekit.testing.ports import free_port, wait_for_port
from servicekit.testing.postgres import PostgresCluster


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)


class PgBouncer:
    """Every database of ``cluster`` behind one PgBouncer (``pool_mode``: transaction, as deployed).

    ``default_pool_size``: server connections per database and user; small, so that many client connections
    share few server connections, as at production's scale."""

    def __init__(
        self,
        cluster: PostgresCluster,
        *,
        pool_mode: str = "transaction",
        default_pool_size: int = 2,
        max_client_conn: int = 200,
    ) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer not found: apt-get install pgbouncer")
        self.binary = binary
        self.cluster = cluster
        self.port = free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix="touchpoint-pgbouncer-"))
        # It refuses to run as root: as the cluster's own user then, who must read its directory.
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            shutil.chown(self.base_dir, self._user, self._user)
        (self.base_dir / "userlist.txt").write_text(f'"{cluster.user}" ""\n')
        (self.base_dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={cluster.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {self.base_dir / 'userlist.txt'}\n"
            f"pool_mode = {pool_mode}\ndefault_pool_size = {default_pool_size}\n"
            f"max_client_conn = {max_client_conn}\n"
            f"logfile = {self.base_dir / 'pgbouncer.log'}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> PgBouncer:
        self.process = spawn(
            [self.binary, str(self.base_dir / "pgbouncer.ini")],
            death_signal=signal.SIGKILL, user=self._user, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                wait_for_port(self.port, timeout=1)
                return self
            except TimeoutError:
                continue
        raise RuntimeError(f"pgbouncer did not start: {self.log()[-2000:]}")

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.cluster.user}@127.0.0.1:{self.port}/{database}"

    def log(self) -> str:
        path = self.base_dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def destroy(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            # SIGTERM: an immediate shutdown in 1.18 (Debian 12's); later versions wait for clients, hence the kill.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.base_dir, ignore_errors=True)
