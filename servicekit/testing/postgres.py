"""A throwaway PostgreSQL cluster (initdb, then ``postgres`` as a child process, in a temp dir on a free port).

``postgres`` runs as this process's own child, not through ``pg_ctl`` (which daemonizes it): so it gets a death
signal (servicekit.processes) and a killed test session leaves no cluster behind."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from servicekit.processes import spawn
from servicekit.testing.ports import free_port

# pg_ctl's shutdown modes, as the signals the postmaster takes for them.
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def postgres_bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PostgresCluster:
    """A cluster owned by this process. As root, it runs as the ``postgres`` user (initdb refuses root)."""

    def __init__(self, base_dir: Path | None = None, port: int | None = None, *, durable: bool = False) -> None:
        """``durable``: PostgreSQL's own settings (every commit synced to disk), as in production; benchmarks
        use it. Without it (tests), commits are not synced, which changes no behaviour a test checks."""
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL not found: apt-get install postgresql")
        self.bin_dir = bin_dir
        self.base_dir = base_dir or Path(tempfile.mkdtemp(prefix="touchpoint-pg-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self.port = port or free_port()
        self.durable = durable
        self.user = "postgres"
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base_dir, owner.pw_uid, owner.pw_gid)
            os.chmod(self.base_dir, 0o755)
            # The postgres user must be able to reach its directory (mkdtemp makes 0700 parents).
            for parent in self.base_dir.parents:
                if parent == Path(tempfile.gettempdir()) or parent == Path("/"):
                    break
                os.chmod(parent, os.stat(parent).st_mode | 0o005)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self._server_user = "postgres" if self._run_as else None
        self.process: subprocess.Popen[bytes] | None = None

    def _run(self, *args: str) -> None:
        subprocess.run([*self._run_as, *args], check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def init(self) -> PostgresCluster:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        self._run("mkdir", "-p", str(self.socket_dir))
        return self

    def start(self) -> PostgresCluster:
        # Durable: PostgreSQL's own sync settings and production's WAL sizing (deploy/), so that WAL segments
        # are recycled, not created. Tests: commits not synced.
        if self.durable:
            durability = "-c min_wal_size=1GB -c max_wal_size=2GB"
        else:
            durability = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options = [
            "-p", str(self.port), "-k", str(self.socket_dir), "-c", "listen_addresses=127.0.0.1",
            *durability.split(), "-c", "max_connections=400", "-c", "shared_buffers=256MB",
        ]  # fmt: skip
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        # SIGQUIT on this process's death: PostgreSQL's immediate shutdown, which takes its backends with it.
        self.process = spawn(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), *options],
            death_signal=signal.SIGQUIT, user=self._server_user, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        self._wait_ready(timeout=60)
        if self.durable:
            self.recycle_wal()
        return self

    def recycle_wal(self, segments: int = 64) -> None:
        """Give a new cluster the recycled WAL segments of one that has been running a while.

        A new cluster has none, so each 16 MB of WAL means creating and zero-filling a segment while every
        commit waits: a stall of about 50 ms every 1.8 s at 2,400 single inserts a second, which made the
        single-POST p99 of a benchmark 75-85 ms instead of 33-36 ms. A running server renames old segments
        at each checkpoint instead (up to ``min_wal_size``). Here: write that many segments, then checkpoint."""
        self.psql(
            "CREATE TABLE wal_warmup (n int); "
            f"DO $$ BEGIN FOR i IN 1..{segments} LOOP "
            "INSERT INTO wal_warmup VALUES (i); PERFORM pg_switch_wal(); END LOOP; END $$; "
            "DROP TABLE wal_warmup; CHECKPOINT"
        )

    def _wait_ready(self, timeout: float) -> None:
        """Until postmaster.pid says ``ready`` (its 8th line, as pg_ctl -w waits for it)."""
        assert self.process is not None
        pid_file = self.data_dir / "postmaster.pid"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{tail}")
            try:
                lines = pid_file.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if len(lines) >= 8 and lines[0].strip() == str(self.process.pid) and lines[7].strip() == "ready":
                return
            time.sleep(0.05)
        self.stop("immediate")
        raise TimeoutError(f"postgres not ready after {timeout}s; see {self.log_path}")

    def stop(self, mode: str = "fast") -> None:
        """As ``pg_ctl stop -m mode``: signal the postmaster and wait for it to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(_STOP_SIGNALS[mode])
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def url(self, database: str = "postgres", driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> str:
        suffix = f" TEMPLATE {template}" if template else ""
        self.psql(f'CREATE DATABASE "{name}"{suffix}')
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)
