"""Serve an app factory in several processes, each accepting connections on its own socket.

    python -m servicekit.serve gateway.app:create_app --host 127.0.0.1 --port 8000 --workers 2

uvicorn's ``--workers`` shares one listening socket among its worker processes, and the process that wakes first
accepts every connection waiting: 16 keep-alive clients connecting at once all landed on one of two workers (the
other stayed idle, and the timeline benchmark measured one core). Here each worker binds the port with
``SO_REUSEPORT`` (Linux): the kernel spreads new connections over the workers' sockets. Each worker is a plain
``uvicorn.Server`` with the same options as ``servicekit.devstack`` gives uvicorn. The parent only supervises: a
SIGTERM or SIGINT is passed on to every worker (each drains as uvicorn does), and when one worker ends the others
are stopped too, so whoever started the service sees it stop rather than run on half its capacity.

Metrics: every worker writes its values to a folder of its supervisor's (prometheus_client's multiprocess
mode, ``PROMETHEUS_MULTIPROC_DIR``) and never serves them itself; with ``--metrics-port`` the supervisor serves
their sum there. A worker's own port would show one worker, whichever the kernel chose for the scrape.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sys
import tempfile
from types import FrameType

import uvicorn

from servicekit.processes import die_with_parent


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other processes may bind too (``SO_REUSEPORT``)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _serve(app: str, sock: socket.socket, graceful_s: int) -> None:
    config = uvicorn.Config(app, factory=True, access_log=False, timeout_graceful_shutdown=graceful_s)
    uvicorn.Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("app", help="module:factory, as for uvicorn --factory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout-graceful-shutdown", type=int, default=5)
    parser.add_argument("--metrics-host", default="127.0.0.1")
    parser.add_argument("--metrics-port", type=int, help="serve the workers' summed Prometheus metrics here")
    args = parser.parse_args(argv)
    # Before any worker exists (and before prometheus_client is imported here): a worker's metrics live in files.
    metrics_dir = tempfile.mkdtemp(prefix="servicekit-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _supervise(args)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(args: argparse.Namespace) -> int:
    # All sockets are bound before the first worker starts: the port is ours, or this fails at once.
    sockets = [listening_socket(args.host, args.port) for _ in range(max(1, args.workers))]
    workers: list[int] = []
    for sock in sockets:
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            # A SIGKILLed supervisor takes its workers with it (they would hold the port with parent 1).
            die_with_parent(signal.SIGKILL, parent_pid=supervisor)
            for other in sockets:
                if other is not sock:
                    other.close()
            try:
                _serve(args.app, sock, args.timeout_graceful_shutdown)
            finally:
                os._exit(0)
        workers.append(pid)
    for sock in sockets:
        sock.close()
    # Started after the forks: a thread in the parent is not copied into a child half-way through a request.
    listener = None
    if args.metrics_port is not None:
        from servicekit.metrics import multiprocess_registry, start_metrics_listener

        try:
            listener = start_metrics_listener(
                host=args.metrics_host, port=args.metrics_port, registry=multiprocess_registry()
            )
        except OSError:  # the metrics port is taken: the service does not run without its metrics
            for pid in workers:
                os.kill(pid, signal.SIGTERM)
            for pid in workers:
                os.waitpid(pid, 0)
            raise

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        pass_on(signum, frame)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    while workers:
        pid, wait_status = os.wait()
        if pid not in workers:
            continue
        workers.remove(pid)
        if listener is not None:
            from servicekit.metrics import forget_worker

            forget_worker(pid)
        code = os.waitstatus_to_exitcode(wait_status)
        # uvicorn ends a worker it stopped gracefully by raising the signal again: that is a clean stop.
        if stopping and code in (-signal.SIGTERM, -signal.SIGINT):
            code = 0
        status = status or (code if code >= 0 else 128 - code)
        if workers and not stopping:  # one ended by itself: the service as a whole stops
            stopping = True
            pass_on(signal.SIGTERM, None)
    if listener is not None:
        listener.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
