"""servicekit.processes: a spawned child is the program itself, and dies with the process that spawned it."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from servicekit.processes import spawn


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_the_child_is_the_program_itself_with_its_environment_directory_and_exit_code(tmp_path: Path) -> None:
    child = spawn(
        ["sh", "-c", 'echo "$$ $GREETING $(pwd)"; exit 3'], env={**os.environ, "GREETING": "hello"}, cwd=tmp_path,
        stdout=subprocess.PIPE,
    )  # fmt: skip
    output, _ = child.communicate(timeout=10)
    assert output.decode().split() == [str(child.pid), "hello", str(tmp_path)], "exec'd: no wrapper in between"
    assert child.returncode == 3


def _spawn_from_a_thread_then_kill_the_parent(user: str | None) -> tuple[psutil.Process, bool, int]:
    """A parent spawns ``sleep`` from a short-lived thread and waits; once the thread has ended, the parent is
    SIGKILLed. Returns the sleeper, whether it outlived the thread, and its uid while it ran."""
    parent_code = (
        "import sys, threading\n"
        "from servicekit.processes import spawn\n"
        "children = []\n"
        f"starter = threading.Thread(target=lambda: children.append(spawn(['sleep', '300'], user={user!r})))\n"
        "starter.start(); starter.join()\n"
        "print(children[0].pid, flush=True)\n"
        "sys.stdin.read()\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        sleeper = psutil.Process(int(parent.stdout.readline()))
        outlived_the_thread = not _gone_within(sleeper.pid, 0.5)
        uid = sleeper.uids().real
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        return sleeper, outlived_the_thread, uid
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_a_child_spawned_from_a_thread_that_ended_lives_on_until_its_parent_is_killed() -> None:
    sleeper, outlived_the_thread, uid = _spawn_from_a_thread_then_kill_the_parent(None)
    try:
        assert outlived_the_thread, "the spawning thread ended, the child must not"
        assert uid == os.getuid()
        assert _gone_within(sleeper.pid, 5), "the child outlived its SIGKILLed parent"
    finally:
        if not _gone_within(sleeper.pid, 0):
            sleeper.kill()


# CI runs as root, where the test must run (never skip there); a developer's run as another user cannot switch user.
@pytest.mark.skipif(os.geteuid() != 0 and os.environ.get("CI") != "true", reason="running as another user needs root")
def test_a_child_run_as_another_user_keeps_its_death_signal() -> None:
    # A change of credentials clears the death signal: the wrapper changes user first, then asks for it.
    user = pwd.getpwuid(65534).pw_name  # nobody
    sleeper, outlived_the_thread, uid = _spawn_from_a_thread_then_kill_the_parent(user)
    try:
        assert outlived_the_thread
        assert uid == 65534
        assert _gone_within(sleeper.pid, 5), "the child outlived its SIGKILLed parent"
    finally:
        if not _gone_within(sleeper.pid, 0):
            sleeper.kill()
