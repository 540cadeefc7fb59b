"""`make bench`: run every benchmark under bench/, then write bench/results/REPORT.md and report.json.

Runs bench/floors.py first (the raw floors of this run), then contacts, ingest, followups, timeline, load and e2e,
each as its own process (those not in this checkout are listed as missing). Each figure is shown beside its
target and the raw floor measured in the same run, with the machine's description.

A benchmark states its figures in its JSON under ``"figures"``: a list of
``{"name", "value", "unit", "target", "better": "lower"|"higher", "floor": <key of FLOORS>, "backend"}``.
For results without that list (contacts), an extractor below reads the figures from the document's shape.

    python -m bench.run [--quick] [--only contacts,load] [--render-only] [--load-minutes N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine
from servicekit.processes import spawn

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["floors", "contacts", "ingest", "followups", "timeline", "load", "e2e"]
# A benchmark that runs longer than this is stopped and reported as such (load adds its own minutes).
TIMEOUT_S = {"floors": 900, "contacts": 3600, "ingest": 3600, "followups": 3600, "timeline": 5400, "load": 1800,
             "e2e": 3600}  # fmt: skip

Figure = dict[str, Any]


def _get(document: dict[str, Any] | None, *path: str | int) -> Any:
    node: Any = document
    for key in path:
        if isinstance(node, dict) and isinstance(key, str):
            node = node.get(key)
        elif isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
            node = node[key]
        else:
            return None
    return node


# Raw floors by key: (what it is, unit, how to read it from floors.json for a backend).
FLOORS: dict[str, tuple[str, str, Callable[[dict[str, Any], str], Any]]] = {
    "http_p50_ms": ("bare FastAPI endpoint p50", "ms", lambda f, b: _get(f, "http", "bare_endpoint", "p50_ms")),
    "http_p99_ms": ("bare FastAPI endpoint p99", "ms", lambda f, b: _get(f, "http", "bare_endpoint", "p99_ms")),
    "http_rate": ("bare FastAPI endpoint, 64 clients", "req/s",
                  lambda f, b: _get(f, "http", "bare_endpoint_rate", "per_second")),
    # The same endpoint loaded by bench.http1.LightClient, the client bench/ingest.py measures with.
    "http_rate_light": ("bare FastAPI endpoint, 64 light clients", "req/s",
                        lambda f, b: _get(f, "http", "bare_endpoint_rate_light", "per_second")),
    "http_p99_ms_light": ("bare FastAPI endpoint p99, light client", "ms",
                          lambda f, b: _get(f, "http", "bare_endpoint_light", "p99_ms")),
    "db_insert_rate": ("database bulk insert", "rows/s",
                       lambda f, b: _get(f, "database", b, "bulk_insert_rows_per_second")),
    "db_insert_p99_ms": ("database single insert+commit p99", "ms",
                         lambda f, b: _get(f, "database", b, "single_insert_commit", "p99_ms")),
    "db_point_p99_ms": ("database point query p99", "ms", lambda f, b: _get(f, "database", b, "point_query", "p99_ms")),
    "db_page_p99_ms": ("database contact page (50 rows) p99", "ms",
                       lambda f, b: _get(f, "database", b, "contact_page_query", "p99_ms")),
    "nats_publish_p99_ms": ("JetStream acked publish p99", "ms",
                            lambda f, b: _get(f, "nats", "publish_acked", "p99_ms")),
    "nats_publish_rate": ("JetStream acked publish", "msg/s", lambda f, b: _get(f, "nats", "publish_per_second")),
    "nats_consume_rate": ("JetStream pull consume + ack", "msg/s",
                          lambda f, b: _get(f, "nats", "consume_acked_per_second")),
}  # fmt: skip


def figure(name: str, value: Any, unit: str, *, target: float | None = None, better: str = "lower",
           floor: str | None = None, backend: str | None = None) -> Figure:  # fmt: skip
    return {"name": name, "value": value, "unit": unit, "target": target, "better": better, "floor": floor,
            "backend": backend}  # fmt: skip


def contacts_figures(document: dict[str, Any]) -> list[Figure]:
    """bench/contacts.py: the largest size measured per backend carries the targets."""
    figures: list[Figure] = []
    for run in document.get("runs", []):
        backend = run.get("backend")
        largest = _get(run, "sizes", -1) or {}
        size = largest.get("contacts")
        at = f" at {size:,} contacts" if isinstance(size, int) else ""
        figures += [
            figure(f"resolve existing identity p99{at}", _get(largest, "resolve_existing", "p99_ms"), "ms",
                   target=10, floor="db_point_p99_ms", backend=backend),
            figure(f"search by prefix p99{at}", _get(largest, "search_prefix", "p99_ms"), "ms", target=20,
                   floor="db_page_p99_ms", backend=backend),
            figure(f"GET contact by id p99{at}", _get(largest, "get_by_id", "p99_ms"), "ms", floor="http_p99_ms",
                   backend=backend),
            figure("create contacts (16 clients)", _get(largest, "create", "per_second"), "req/s", better="higher",
                   floor="db_insert_p99_ms", backend=backend),
            figure("resolve existing (16 clients)", _get(largest, "resolve_existing_rate", "per_second"), "req/s",
                   better="higher", floor="http_rate", backend=backend),
            figure("resolve new (16 clients)", _get(largest, "resolve_new_rate", "per_second"), "req/s",
                   better="higher", floor="db_insert_p99_ms", backend=backend),
        ]  # fmt: skip
    return figures


def generic_figures(document: dict[str, Any]) -> list[Figure]:
    """Without a ``figures`` list: every numeric verdict, with the target of the same name when there is one."""
    targets = document.get("targets") or {}
    figures: list[Figure] = []
    for backend, verdict in (document.get("verdicts") or {}).items():
        if not isinstance(verdict, dict):
            continue
        for key, value in verdict.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            target = next((t for name, t in targets.items() if name.startswith(key) or key.startswith(name)), None)
            unit = "ms" if key.endswith("_ms") else ("/s" if "per_s" in key or key.endswith("_rate") else "")
            better = "higher" if unit == "/s" else "lower"
            figures.append(figure(key, value, unit, target=target, better=better, backend=backend))
    return figures


def followups_figures(document: dict[str, Any]) -> list[Figure]:
    """bench/followups.py: the due-wave lateness and the touchpoint-to-follow-up latency under load."""
    backend = document.get("backend")
    due, touch = document.get("falling_due") or {}, document.get("touch_to_followup") or {}
    count = due.get("followups")
    rate = touch.get("rate_per_s")
    at = f" at {rate:,} touchpoints/s" if isinstance(rate, int | float) else ""
    return [
        figure(f"due follow-ups missed or fired twice (of {count:,})" if isinstance(count, int) else "due missed",
               None if not due else abs(count - due.get("fired", 0)) + due.get("fired_twice", 0), "",
               target=0, backend=backend),
        figure("due lateness p99", _get(due, "lateness", "p99_ms"), "ms", target=2000, backend=backend),
        figure(f"touchpoint to follow-up scheduled p99{at}", _get(touch, "touch_to_scheduled_event", "p99_ms"),
               "ms", target=250, floor="nats_publish_p99_ms", backend=backend),
        figure(f"touchpoint to follow-up stored p99{at}", _get(touch, "touch_to_stored", "p99_ms"), "ms",
               target=250, floor="db_insert_p99_ms", backend=backend),
        figure("touchpoint rate achieved", touch.get("achieved_rate_per_s"), "touchpoints/s", better="higher",
               backend=backend),
    ]  # fmt: skip


EXTRACTORS: dict[str, Callable[[dict[str, Any]], list[Figure]]] = {
    "contacts": contacts_figures,
    "followups": followups_figures,
}


def figures_of(name: str, document: dict[str, Any]) -> list[Figure]:
    if isinstance(document.get("figures"), list):
        return [dict(f) for f in document["figures"] if isinstance(f, dict)]
    if name in EXTRACTORS:
        return EXTRACTORS[name](document)
    return generic_figures(document)


def verdict(fig: Figure) -> str:
    value, target = fig.get("value"), fig.get("target")
    if target is None:
        return "—"
    if not isinstance(value, int | float):
        return "no figure"
    met = value >= target if fig.get("better") == "higher" else value <= target
    return "met" if met else "**missed**"


def attach_floor(fig: Figure, floors: dict[str, Any] | None) -> Figure:
    key = fig.get("floor")
    if isinstance(key, str) and key in FLOORS and floors is not None:
        label, unit, read = FLOORS[key]
        value = read(floors, fig.get("backend") or "postgres")
        fig["floor_value"], fig["floor_label"], fig["floor_unit"] = value, label, unit
        # value ÷ floor, only between like units: for latencies how many floors, for rates what share of it.
        ours = fig.get("value")
        if isinstance(value, int | float) and isinstance(ours, int | float) and value and unit == fig["unit"]:
            fig["times_floor"] = round(ours / value, 2)
    return fig


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "—" if value is None else str(value)


def _machine(m: dict[str, Any]) -> str:
    return f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB RAM, Python {m.get('python')}"


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Touchpoint benchmark report",
        "",
        f"Generated {report['generated_at']} by `{report['command']}`"
        + (" (quick sizes: a smoke run, not the targets' sizes)" if report["quick"] else "")
        + ".",
        "",
        f"Machine of this render: {_machine(m)}, {m.get('os')}. Each benchmark below names the machine and the "
        "time of its own run: results kept from an earlier run may come from another machine, and a raw floor "
        "is of the same run only when both name the same machine and time. PostgreSQL runs with its own "
        "durable settings (fsync, synchronous_commit and full_page_writes on: every commit is on disk), "
        "JetStream with `sync_interval: always`.",
        "",
        "## Summary",
        "",
        "| benchmark | status | time | figures | targets met |",
        "|---|---|---:|---:|---:|",
    ]
    for name, bench in report["benchmarks"].items():
        figs = bench.get("figures", [])
        with_target = [f for f in figs if f.get("target") is not None]
        met = sum(1 for f in with_target if verdict(f) == "met")
        duration = f"{bench['duration_s']:.0f} s" if bench.get("duration_s") is not None else "—"
        lines.append(f"| {name} | {bench['status']} | {duration} | {len(figs)} | {met}/{len(with_target)} |")
    floors = report.get("floors")
    lines += ["", "## Raw floors (same run)", ""]
    if floors:
        lines += [f"Measured {floors.get('measured_at')} on {_machine(floors.get('machine') or {})}.", ""]
        lines += ["| floor | backend | value |", "|---|---|---:|"]
        for _key, (label, unit, read) in FLOORS.items():
            backends = ["sqlite", "postgres"] if _key.startswith("db_") else ["—"]
            for backend in backends:
                value = read(floors, backend)
                if value is not None:
                    lines.append(f"| {label} | {backend} | {_fmt(value)} {unit} |")
    else:
        lines.append("No floors in this run (bench/floors.py did not produce a result).")
    for name, bench in report["benchmarks"].items():
        if name == "floors":
            continue
        lines += ["", f"## {name}", ""]
        if bench.get("measured_at"):
            lines += [f"Measured {bench['measured_at']} on {_machine(bench.get('machine') or {})}.", ""]
        if bench["status"] != "ok":
            lines.append(f"Status: {bench['status']}." + (f" {bench['note']}" if bench.get("note") else ""))
        figs = bench.get("figures", [])
        if figs:
            lines += ["| figure | backend | value | target | verdict | raw floor (same run) | ratio to floor |",
                      "|---|---|---:|---:|---|---|---:|"]  # fmt: skip
            for f in figs:
                sign = "≥" if f.get("better") == "higher" else "≤"
                target = f"{sign} {_fmt(f['target'])} {f['unit']}" if f.get("target") is not None else "—"
                floor = (f"{f['floor_label']}: {_fmt(f.get('floor_value'))} {f['floor_unit']}"
                         if f.get("floor_label") else "—")  # fmt: skip
                lines.append(f"| {f['name']} | {f.get('backend') or '—'} | {_fmt(f.get('value'))} {f['unit']} | "
                             f"{target} | {verdict(f)} | {floor} | {_fmt(f.get('times_floor'))} |")  # fmt: skip
        if bench.get("result_file"):
            lines += ["", f"All figures: `{bench['result_file']}`."]
    lines.append("")
    return "\n".join(lines)


def run_one(name: str, quick: bool, load_minutes: float | None) -> dict[str, Any]:
    script = ROOT / "bench" / f"{name}.py"
    if not script.exists():
        return {"status": "missing", "note": f"bench/{name}.py is not in this checkout."}
    args = [sys.executable, "-m", f"bench.{name}"]
    if quick:
        args.append("--quick")
    if name == "load" and load_minutes is not None:
        args += ["--minutes", str(load_minutes)]
    timeout = TIMEOUT_S.get(name, 3600) + (int(load_minutes * 60) if name == "load" and load_minutes else 0)
    print(f"== bench/{name}.py ({' '.join(args[3:]) or 'full'}) ==", flush=True)
    started = time.perf_counter()
    # Dies with this runner (servicekit.processes), and its stacks with it.
    benchmark = spawn(args, cwd=ROOT)
    try:
        returncode = benchmark.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        benchmark.kill()
        benchmark.wait()
        duration = time.perf_counter() - started
        return {"status": "timed out", "duration_s": duration, "note": f"stopped after {timeout} s"}
    duration = time.perf_counter() - started
    if returncode != 0:
        return {"status": f"failed (exit {returncode})", "duration_s": duration}
    return {"status": "ok", "duration_s": duration}


def load_result(name: str, quick: bool) -> tuple[dict[str, Any] | None, Path | None]:
    for candidate in [f"{name}-quick", name] if quick else [name]:
        path = RESULTS / f"{candidate}.json"
        if path.exists():
            return json.loads(path.read_text()), path
    return None, None


def build_report(statuses: dict[str, dict[str, Any]], quick: bool, command: str) -> dict[str, Any]:
    floors, _ = load_result("floors", quick)
    benchmarks: dict[str, Any] = {}
    for name, status in statuses.items():
        bench = dict(status)
        document, path = load_result(name, quick)
        if document is not None and path is not None:
            bench["result_file"] = str(path.relative_to(ROOT))
            bench["measured_at"] = document.get("measured_at")
            bench["machine"] = document.get("machine")
            if name != "floors":
                bench["figures"] = [attach_floor(f, floors) for f in figures_of(name, document)]
        elif bench["status"] == "ok":
            bench["status"] = "no result file"
        benchmarks[name] = bench
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "quick": quick,
        "machine": machine(),
        "floors": floors,
        "benchmarks": benchmarks,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every benchmark at smoke-run sizes")
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(ORDER))
    parser.add_argument("--render-only", action="store_true", help="run nothing; report the existing results")
    parser.add_argument("--load-minutes", type=float, default=None, help="length of the load run (default 10)")
    args = parser.parse_args(argv)
    names = [n for n in ORDER if not args.only or n in args.only.split(",")]
    statuses: dict[str, dict[str, Any]] = {}
    for name in names:
        if args.render_only:
            exists = (ROOT / "bench" / f"{name}.py").exists()
            statuses[name] = {"status": "ok" if exists else "missing", "duration_s": None}
        else:
            statuses[name] = run_one(name, args.quick, args.load_minutes)
    command = "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:])
    report = build_report(statuses, args.quick, command.strip())
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "REPORT.md").write_text(render(report))
    print(f"written: {RESULTS / 'REPORT.md'} and {RESULTS / 'report.json'}")
    failed = [n for n, s in report["benchmarks"].items() if s["status"] not in ("ok", "missing")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
