"""Child processes that die with the process that started them, however it dies.

A test, benchmark or ``make up`` that is SIGKILLed runs no teardown: its nats-server, services, Caddy and
PostgreSQL would live on with parent 1. ``spawn`` starts every such child through a tiny re-exec wrapper that
asks Linux for a death signal (``prctl(PR_SET_PDEATHSIG)``) and then execs the real program, so the kernel
signals the child when its parent goes. The wrapper, not a ``preexec_fn``: a ``preexec_fn`` is unsafe in a
process with threads, and every harness here has some.

The kernel sends the signal when the *thread* that forked the child exits, not the process: a child started
from ``asyncio.to_thread`` or a thread pool would be killed as soon as that pool's thread ends. So every child
is forked from one daemon thread that lives as long as the process.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

_PR_SET_PDEATHSIG = 1

# Runs under ``python -I -S -c``: no site, no PYTHONPATH, stdlib only (about 15 ms). Everything is imported before
# the user changes (os.execvp's PATH search imports warnings; the new user may not read the interpreter's
# stdlib). The user changes before prctl because a change of credentials clears the death signal. If the parent
# died before prctl took effect, the child has been re-parented already: it exits instead of running unwatched.
_WRAPPER = """\
import ctypes, os, pwd, sys, warnings
signum, parent, user = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if user:
    entry = pwd.getpwnam(user)
    os.initgroups(user, entry.pw_gid)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    os.environ.update(HOME=entry.pw_dir, USER=user, LOGNAME=user)
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, signum, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_PDEATHSIG) failed: errno {ctypes.get_errno()}")
if os.getppid() != parent:
    sys.exit(70)
os.execvp(sys.argv[4], sys.argv[4:])
"""


def supported() -> bool:
    return sys.platform.startswith("linux")


def die_with_parent(signum: int = signal.SIGKILL, *, parent_pid: int) -> None:
    """For a child forked in Python (``os.fork``): the same death signal, set in the child itself."""
    if not supported():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(70)


class _Spawner:
    """One daemon thread that forks every child: it ends only with the process."""

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, function: Callable[[], Any]) -> Any:
        if threading.current_thread() is self._thread:
            return function()
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="servicekit-spawner", daemon=True)
                self._thread.start()
        done: Future[Any] = Future()
        self._requests.put((function, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            function, done = self._requests.get()
            try:
                done.set_result(function())
            except BaseException as error:
                done.set_exception(error)


_spawner = _Spawner()


def spawn(
    args: Sequence[str], *, death_signal: int = signal.SIGKILL, user: str | None = None, **popen: Any
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **popen)``, but the child gets ``death_signal`` when this process dies.

    ``user``: run the child as that user (the caller must be root), as ``runuser -u`` would, but without a
    ``runuser`` process in between (it would get the death signal, not the program). The returned ``Popen``'s
    pid is the program's own: the wrapper execs it."""
    args = [str(arg) for arg in args]
    if supported():
        args = [sys.executable, "-I", "-S", "-c", _WRAPPER, str(int(death_signal)), str(os.getpid()), user or "",
                *args]  # fmt: skip
    elif user is not None:
        raise RuntimeError("spawn(user=...) needs Linux")
    return _spawner.call(lambda: subprocess.Popen(args, **popen))  # type: ignore[no-any-return]
