"""deploy/grafana, deploy/prometheus and deploy/kubernetes/monitoring, checked without Prometheus or Grafana: every
metric a panel or an alert queries is one the services export (their real registries), the rule file has the shape
Prometheus loads, the ServiceMonitor finds the metrics ports, and compose's monitoring profile is wired to them."""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

from tests.deploy_support import compose

DEPLOY = compose.ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "touchpoint.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
K8S_MONITORING = DEPLOY / "kubernetes" / "monitoring"
APPS = tuple(compose.SETTINGS)
# Every module that declares metrics: importing them fills the process's registry as a running service fills its.
APP_MODULES = ("gateway.app", "services.contacts.app", "services.interactions.app", "services.followups.app")
# What Prometheus adds to every target itself.
SCRAPE_SERIES = {"up"}
# The metrics ops asked for (issue 22): each is on the dashboard and behind an alert.
OPS_METRICS = {
    "consumer_pending_messages",
    "outbox_oldest_unsent_age_seconds",
    "db_pool_connections_in_use",
    "followups_overdue",
}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")

# ---- PromQL, read as far as the names in it go (promtool is not installed)

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
             "inf", "nan", "atan2"}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions, keywords, label names
    (in ``{}`` or a grouping clause), durations or Grafana variables."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # $__rate_interval, ${datasource}
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        rest = text[match.end() :].lstrip()
        if rest.startswith("("):
            continue  # a function or an aggregation
        if match.group().lower() in _KEYWORDS or re.match(r"\d", text[match.start() - 1 : match.start()] or " "):
            continue
        names.add(match.group())
    return names


def balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def exported_series() -> set[str]:
    """Every series name the services can export, read from the registry their modules declare metrics in."""
    for module in APP_MODULES:
        importlib.import_module(module)
    names = set()
    for family in REGISTRY.collect():
        suffixes = {
            "counter": ("_total", "_created"),
            "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("", "_count", "_sum", "_created"),
            "gauge": ("",),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def panel_exprs() -> dict[str, list[str]]:
    return {
        panel["title"]: [target["expr"] for target in panel.get("targets", [])]
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
    }


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


# ---- tests


def test_the_promql_reader_finds_metric_names_and_nothing_else() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (job, le) (rate(http_request_duration_seconds_bucket{job=~"a|b"}'
        "[$__rate_interval]))) / on (job) group_left sum without (instance) (up offset 5m) > bool 0.5"
        " and max by (durable) (deriv(consumer_pending_messages[10m:1m])) > 1e3 or vector(0) unless absent(x_total)"
    )
    assert metric_names(expr) == {"http_request_duration_seconds_bucket", "up", "consumer_pending_messages",
                                  "x_total"}  # fmt: skip
    assert balanced(expr) and not balanced("sum(rate(x[5m])") and not balanced("max(x{a='b'))")


def test_every_panel_and_alert_queries_metrics_the_services_export() -> None:
    exported = exported_series() | SCRAPE_SERIES
    assert exported >= OPS_METRICS, "the services declare the metrics ops asked for"
    used: dict[str, set[str]] = {}
    for title, exprs in panel_exprs().items():
        assert exprs, f"panel {title!r} queries nothing"
        for expr in exprs:
            assert balanced(expr), f"panel {title!r}: {expr}"
            names = metric_names(expr)
            assert names, f"panel {title!r}: no metric in {expr}"
            unknown = names - exported
            assert not unknown, f"panel {title!r} queries {sorted(unknown)}, which no service exports"
            used.setdefault("dashboard", set()).update(names)
    for rule in alert_rules():
        assert balanced(rule["expr"]), rule["alert"]
        names = metric_names(rule["expr"])
        unknown = names - exported
        assert names and not unknown, f"alert {rule['alert']} queries {sorted(unknown)}, which no service exports"
        used.setdefault("alerts", set()).update(names)
    assert used["dashboard"] >= OPS_METRICS, OPS_METRICS - used["dashboard"]
    assert OPS_METRICS | {"up", "http_requests_total"} <= used["alerts"], OPS_METRICS - used["alerts"]

    # The check bites: a misspelt metric in a panel is caught.
    assert metric_names("max by (durable) (consumer_pending_mesages)") - exported == {"consumer_pending_mesages"}


def test_label_values_the_queries_name_are_ones_the_code_uses() -> None:
    """A durable, consumer or route named in a query exists: a renamed durable would leave a panel empty."""
    from services.followups import events as followup_events
    from services.followups import staff
    from services.interactions import events as interaction_events

    durables = {
        interaction_events.INGEST_DURABLE,
        interaction_events.CONTACTS_DURABLE,
        followup_events.INTERACTIONS_DURABLE,
        followup_events.CONTACTS_DURABLE,
        staff.STAFF_DURABLE,
    }
    exprs = [e for es in panel_exprs().values() for e in es] + [r["expr"] for r in alert_rules()]
    named = [(label, value) for e in exprs for label, value in re.findall(r'(\w+)="([^"]*)"', e)]
    assert named
    for label, value in named:
        if label in ("durable", "consumer"):
            assert value in durables, (label, value)
        if label == "job":
            assert value in APPS, value
        if label == "outcome":
            assert value in ("applied", "duplicate", "retry", "dead_letter"), value


def test_the_alert_rules_have_the_shape_prometheus_loads() -> None:
    data = yaml.safe_load(ALERTS.read_text())
    assert set(data) == {"groups"}
    names = [group["name"] for group in data["groups"]]
    assert len(names) == len(set(names)) and all(names)
    alerts = alert_rules()
    assert len({rule["alert"] for rule in alerts}) == len(alerts), "alert names are unique"
    for rule in alerts:
        assert set(rule) <= RULE_KEYS and {"alert", "expr", "for", "labels", "annotations"} <= set(rule), rule
        assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"]), rule["alert"]
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert DURATION.match(str(rule["for"])), rule["for"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        for text in rule["annotations"].values():
            assert text.count("{{") == text.count("}}"), text
    by_name = {rule["alert"]: rule for rule in alerts}
    # What the issue asks to be alerted on: a lag above its threshold or growing for 5 minutes, an outbox row
    # older than 60 s, a service down, the pool saturated, 5xx, overdue follow-ups growing.
    assert by_name["TouchpointConsumerLagHigh"]["for"] == by_name["TouchpointConsumerLagGrowing"]["for"] == "5m"
    assert by_name["TouchpointOutboxStuck"]["expr"].endswith("> 60")
    assert "up{" in by_name["TouchpointServiceDown"]["expr"]
    assert "db_pool_connections_limit" in by_name["TouchpointDatabasePoolSaturated"]["expr"]
    assert 'status=~"5.."' in by_name["TouchpointHighErrorRate"]["expr"]
    assert "deriv(followups_overdue" in by_name["TouchpointOverdueFollowupsGrowing"]["expr"]


def test_the_dashboard_has_the_shape_grafana_imports() -> None:
    data = dashboard()
    assert data["uid"] == "touchpoint" and data["title"] and isinstance(data["schemaVersion"], int)
    panels = data["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    [variable] = data["templating"]["list"]
    assert variable["type"] == "datasource" and variable["query"] == "prometheus"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat", "gauge", "bargauge", "table"), panel["type"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
    titles = " ".join(panel_exprs()).lower()
    for subject in ("request rate", "latency", "consumer lag", "outbox", "pool", "overdue", "ingest"):
        assert subject in titles, subject


def test_compose_monitoring_profile_runs_prometheus_with_the_rules_and_grafana_with_the_dashboard() -> None:
    services = compose.load(compose.read_env_file(compose.ENV_EXAMPLE))["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["monitoring"], "not started by a plain `up`"
    assert all(not s.get("profiles") for name, s in services.items() if name not in ("prometheus", "grafana"))
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prometheus["volumes"] if v.startswith("./")}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/prometheus/alerts.yml"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    # One job per service, named as the service, on the metrics port its environment sets.
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert set(targets) == set(APPS)
    for app in APPS:
        port = compose.environment_of(services[app])[f"{compose.SETTINGS[app].prefix}METRICS_PORT"]
        assert targets[app] == [f"{app}:{port}"], app
        assert set(services[app]["networks"]) & set(prometheus["networks"]), f"Prometheus reaches {app}"

    grafana_mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert grafana_mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert grafana_mounts["/var/lib/grafana/dashboards/touchpoint.json"] == "./deploy/grafana/touchpoint.json"
    provisioning = DEPLOY / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "touchpoint.yml").read_text())["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    assert grafana["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert "backend" not in grafana["networks"], "Grafana reaches Prometheus, not the services"


def k8s_docs(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S_MONITORING / name).read_text()) if doc]


def test_the_servicemonitor_scrapes_each_service_through_a_metrics_only_service() -> None:
    kustomization = yaml.safe_load((K8S_MONITORING / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {p.name for p in K8S_MONITORING.glob("*.yaml")} - {"kustomization.yaml"}
    assert kustomization["namespace"] == "touchpoint"
    docs = [doc for resource in kustomization["resources"] for doc in k8s_docs(resource)]
    services = [d for d in docs if d["kind"] == "Service"]
    for service in services:
        kubernetes_validate.validate(service, kubernetes_validate.utils.latest_version(), strict=True)
    [monitor] = [d for d in docs if d["kind"] == "ServiceMonitor"]
    # No schema ships for the operator's resources: their shape is checked here.
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["jobLabel"] == "app.kubernetes.io/name", "job = the service's name, as the dashboard expects"
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics" and DURATION.match(endpoint["interval"])
    selected = [s for s in services if spec["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert {s["metadata"]["labels"]["app.kubernetes.io/name"] for s in selected} == set(APPS)

    for app in APPS:
        [deployment] = [
            d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "services" / f"{app}.yaml").read_text())
            if d and d["kind"] == "Deployment"
        ]  # fmt: skip
        pod = deployment["spec"]["template"]
        [container] = pod["spec"]["containers"]
        metrics_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
        [service] = [s for s in selected if s["metadata"]["labels"]["app.kubernetes.io/name"] == app]
        assert service["spec"]["clusterIP"] == "None", "headless: Prometheus scrapes each pod"
        assert service["spec"]["selector"] == pod["metadata"]["labels"], app
        assert service["spec"]["ports"] == [{"name": "metrics", "port": metrics_port, "targetPort": "metrics"}]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port), "annotations agree"
        # The service's own Service (what the other pods and the proxy reach) carries the API port only.
        [public] = [
            d for d in yaml.safe_load_all((DEPLOY / "kubernetes" / "services" / f"{app}.yaml").read_text())
            if d and d["kind"] == "Service"
        ]  # fmt: skip
        assert all(p["targetPort"] != "metrics" and p["port"] != metrics_port for p in public["spec"]["ports"]), app


def test_the_prometheusrule_holds_the_same_rules_as_the_rule_file() -> None:
    [rule] = k8s_docs("prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text()), "regenerate prometheusrule.yaml from alerts.yml"


@pytest.mark.parametrize("path", [DASHBOARD, ALERTS, PROMETHEUS_CONFIG], ids=lambda p: Path(p).name)
def test_monitoring_files_are_documented(path: Path) -> None:
    operations = (compose.ROOT / "docs" / "operations.md").read_text()
    assert str(path.relative_to(compose.ROOT)) in operations
