"""The Grafana dashboard stays in step with the metrics agentops exports.

Every expression must name only series that agentops/observability/metrics.py defines (with the suffixes
Prometheus adds), group by labels those metrics have, apply rate()/increase() to counters and nothing else,
and every metric defined must appear on some panel: a renamed or added metric fails here, not in a
reviewer's Grafana weeks later.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.metrics import MetricWrapperBase

from agentops.observability import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "agentops" / "observability" / "grafana" / "agentops.json"

# Metrics that deliberately have no panel, with the reason. Empty today: every metric is charted.
NOT_CHARTED: dict[str, str] = {}

# Labels Prometheus attaches at scrape time, and the one multiprocess mode adds to `liveall` gauges.
TARGET_LABELS = {"job", "instance"}
SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
COUNTER_LIKE_SUFFIXES = ("_total", "_bucket", "_sum", "_count")
PROMQL_FUNCTIONS = {
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "topk",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "clamp_min",
    "clamp_max",
}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"}
IDENTIFIER = re.compile(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*")


def defined_metrics() -> dict[str, MetricWrapperBase]:
    """Family name → metric object, for every metric object the module defines (and each gauge read at
    scrape time, as a stand-in with the same attributes)."""
    found = {obj._name: obj for obj in vars(metrics).values() if isinstance(obj, MetricWrapperBase)}
    for gauge in metrics.SCRAPE_GAUGES:
        found[gauge.name] = SimpleNamespace(_name=gauge.name, _type="gauge", _labelnames=gauge.labelnames)
    assert len(found) >= 20, "the metrics module defines far fewer metrics than it did: is the import right?"
    return found


def series_names() -> dict[str, MetricWrapperBase]:
    """Every series name a scrape can show (agent_requests_total, …_bucket, …) → its metric."""
    series = {}
    for name, metric in defined_metrics().items():
        for suffix in SERIES_SUFFIXES[metric._type]:
            series[name + suffix] = metric
    return series


def metric_labels(metric: MetricWrapperBase) -> set[str]:
    labels = set(metric._labelnames) | TARGET_LABELS
    if metric._type == "histogram":
        labels.add("le")
    if getattr(metric, "_multiprocess_mode", "") in ("all", "liveall"):
        labels.add("pid")
    return labels


def load_dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard: dict) -> list[dict]:
    """Top-level panels plus those nested in collapsed rows."""
    flat = []
    for panel in dashboard["panels"]:
        flat.append(panel)
        flat.extend(panel.get("panels", []))
    return flat


def chart_panels(dashboard: dict) -> list[dict]:
    return [panel for panel in all_panels(dashboard) if panel["type"] != "row"]


def all_exprs(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in chart_panels(dashboard) for target in panel["targets"]]


def without_label_parts(expr: str) -> str:
    """The expression with strings, matchers, ranges and grouping clauses removed: what is left of the
    identifiers are metric names, functions and keywords."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    return re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)


def referenced_series(expr: str) -> set[str]:
    stripped = without_label_parts(expr)
    names = set()
    for match in IDENTIFIER.finditer(stripped):
        word = match.group()
        is_call = re.match(r"\s*\(", stripped[match.end() :]) is not None
        if is_call:
            assert word in PROMQL_FUNCTIONS, f"unknown PromQL function {word!r} in {expr}"
        elif word not in PROMQL_KEYWORDS:
            names.add(word)
    return names


def grouping_labels(expr: str) -> set[str]:
    labels = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels.update(label.strip() for label in clause.split(",") if label.strip())
    return labels


def matcher_labels(expr: str) -> set[str]:
    labels = set()
    for body in re.findall(r"\{([^}]*)\}", expr):
        labels.update(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body))
    return labels


# --- the file is an importable Grafana 10+ dashboard ---------------------------------------------------


def test_dashboard_is_an_importable_grafana_10_dashboard():
    dashboard = load_dashboard()
    assert dashboard["title"] == "agentops"
    assert dashboard["uid"] and len(dashboard["uid"]) <= 40
    assert 36 <= dashboard["schemaVersion"] <= 41  # Grafana 10.0 writes 38, 11.x 39–41
    assert dashboard["id"] is None  # an import must not overwrite someone else's dashboard id
    inputs = {item["name"]: item for item in dashboard["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    variables = {item["name"]: item for item in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["datasource"]["current"]["value"] == "${DS_PROMETHEUS}"  # the import dialog's choice


def test_every_panel_has_a_prometheus_datasource_and_targets():
    dashboard = load_dashboard()
    panels = chart_panels(dashboard)
    assert len(panels) >= 25
    for panel in panels:
        assert panel["title"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_rows_group_the_panels_in_the_expected_order():
    rows = [panel["title"] for panel in load_dashboard()["panels"] if panel["type"] == "row"]
    assert rows == [
        "Traffic & latency",
        "LLM",
        "Resilience",
        "Cache",
        "Humans",
        "Budgets",
        "Gateway",
        "Platform",
        "Processes",
    ]


def test_panel_ids_are_unique():
    ids = [panel["id"] for panel in all_panels(load_dashboard())]
    duplicated = [pid for pid, seen in Counter(ids).items() if seen > 1]
    assert not duplicated, duplicated
    assert all(isinstance(pid, int) and pid > 0 for pid in ids)


def test_grid_positions_fit_the_24_column_grid_without_overlapping():
    dashboard = load_dashboard()
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["y"] >= 0, panel["title"]
        assert grid["w"] >= 1 and grid["h"] >= 1, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            assert grid == {"h": 1, "w": 24, "x": 0, "y": grid["y"]}, panel["title"]
            assert panel["collapsed"] is False and panel["panels"] == [], panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_panels_follow_their_row_in_reading_order():
    """Grafana assigns a panel to the row above it by y; out-of-order panels would land in the wrong row."""
    positions = [(panel["gridPos"]["y"], panel["gridPos"]["x"]) for panel in load_dashboard()["panels"]]
    assert positions == sorted(positions)


# --- the expressions and the metrics module agree --------------------------------------------------


def test_every_series_an_expression_names_is_defined_in_the_metrics_module():
    known = series_names()
    for expr in all_exprs(load_dashboard()):
        names = referenced_series(expr)
        assert names, f"no metric in {expr}"
        unknown = names - known.keys()
        assert not unknown, f"{sorted(unknown)} in {expr} are not defined in agentops/observability/metrics.py"


def test_every_metric_defined_is_charted_or_explicitly_left_out():
    known = series_names()
    used = {
        known[name]._name for expr in all_exprs(load_dashboard()) for name in referenced_series(expr) if name in known
    }
    defined = set(defined_metrics())
    assert not (NOT_CHARTED.keys() - defined), "the allow-list names metrics that no longer exist"
    assert not (NOT_CHARTED.keys() & used), "an allow-listed metric is charted after all: drop it from the list"
    missing = defined - used - NOT_CHARTED.keys()
    assert not missing, f"metrics with no panel: {sorted(missing)}"


def test_labels_in_matchers_groupings_and_legends_belong_to_the_metric():
    known = series_names()
    for panel in chart_panels(load_dashboard()):
        for target in panel["targets"]:
            expr = target["expr"]
            metrics_in_expr = [known[name] for name in referenced_series(expr) if name in known]  # else: test above
            allowed = set().union(*(metric_labels(metric) for metric in metrics_in_expr))
            used = (
                grouping_labels(expr) | matcher_labels(expr) | set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"]))
            )
            assert used <= allowed, f"{sorted(used - allowed)} are not labels of the metrics in {expr}"


@pytest.mark.parametrize("suffix", COUNTER_LIKE_SUFFIXES)
def test_counters_are_only_read_through_rate_or_increase(suffix):
    known = series_names()
    for expr in all_exprs(load_dashboard()):
        for name in referenced_series(expr) & known.keys():
            if known[name]._type == "gauge" or not name.endswith(suffix):
                continue
            occurrences = len(re.findall(rf"\b{name}\b", expr))
            wrapped = re.findall(rf"\b(?:rate|irate|increase)\(\s*{name}(?:\{{[^}}]*\}})?\[[^\]]+\]\s*\)", expr)
            assert len(wrapped) == occurrences, f"{name} must be read through rate()/increase() in {expr}"


def test_gauges_are_never_rated():
    known = series_names()
    for expr in all_exprs(load_dashboard()):
        for name in referenced_series(expr) & known.keys():
            if known[name]._type == "gauge":
                assert not re.search(rf"\b(?:rate|irate|increase)\(\s*{name}\b", expr), expr


def test_quantiles_come_from_bucket_rates_summed_by_le():
    exprs = [expr for expr in all_exprs(load_dashboard()) if "histogram_quantile" in expr]
    assert exprs
    shape = re.compile(
        r"^histogram_quantile\(0?\.\d+, sum by \(le(?:, \w+)*\) \(rate\(\w+_bucket\{[^}]*\}\[\w+\]\)\)\)$"
    )
    for expr in exprs:
        assert shape.match(expr), expr
    histograms = {name for name, metric in defined_metrics().items() if metric._type == "histogram"}
    charted = {match for expr in exprs for match in re.findall(r"(\w+)_bucket", expr)}
    assert histograms <= charted, f"histograms with no quantile panel: {sorted(histograms - charted)}"


def test_the_extraction_rejects_what_it_should():
    """The checks above are only as good as the parser: it must see a typo'd series and a bad label."""
    known = series_names()
    assert referenced_series('sum by (model) (rate(agentops_llm_tokenz_total{job=~"$job"}[5m]))') == {
        "agentops_llm_tokenz_total"
    }
    assert "agentops_llm_tokenz_total" not in known
    assert grouping_labels("sum by (le, modle) (rate(x[5m]))") == {"le", "modle"}
    assert "modle" not in metric_labels(known["agentops_llm_tokens_total"])
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        referenced_series("rates(agent_requests_total[5m])")
