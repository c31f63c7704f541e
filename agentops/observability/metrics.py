"""Every Prometheus metric agentops exports, defined once.

Pure prometheus-client (no Django import) so the runtime, web and workers share the same objects.
Multiprocess mode: PROMETHEUS_MULTIPROC_DIR must be set before this module is imported (settings.py
and the process launchers do that); gauges therefore declare how processes are combined.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# --- the seed's four metrics -------------------------------------------------------------------
# One sample per request, whatever its path: session_type `run` (a run's execution that ended: succeeded,
# failed or cancelled; a suspension is not an end), `gateway` (a guarded /v1 call: chat completion, response,
# message or embeddings; not /v1/models or count_tokens) or `api` (an /api/v1 call, its docs and schema
# excepted). success is "true" when the run succeeded or the answer was not an error (status < 400): a 4xx
# is the caller's error answer, a 5xx ours, both "false".
REQUESTS = Counter(
    "agent_requests_total",
    "Agent requests by session type (run, gateway, api) and outcome",
    ["session_type", "success"],
)
RESPONSE_SECONDS = Histogram(
    "agent_response_seconds",
    "Agent response time by operation",
    ["operation_type"],
    buckets=LATENCY_BUCKETS,
)
MEMORY_BYTES = Gauge(
    "agent_memory_usage_bytes", "Resident memory of each agentops process", multiprocess_mode="liveall"
)

# --- LLM calls ---------------------------------------------------------------------------------
LLM_TOKENS = Counter("agentops_llm_tokens_total", "Tokens by model and kind", ["model", "kind"])
LLM_COST = Counter("agentops_llm_cost_usd_total", "Priced cost in USD by model", ["model"])
LLM_CALLS = Counter("agentops_llm_calls_total", "Guarded LLM calls by operation and outcome", ["operation", "outcome"])
# The error taxonomy's labels (agentops/runtime/errors.py): ``error_class`` and its ``category`` (network,
# resource, dependency = system; input, logic, data = business).
RETRIES = Counter(
    "agentops_retries_total",
    "Retry attempts by error class and category (LLM and tool calls)",
    ["error_class", "category"],
)
ERRORS = Counter("agentops_provider_errors_total", "Provider errors by class and category", ["error_class", "category"])
TOOL_ERRORS = Counter(
    "agentops_tool_errors_total",
    "Failed tool attempts inside runs by tool, class and category",
    ["tool", "error_class", "category"],
)
FALLBACKS = Counter("agentops_fallbacks_total", "Fallback hops by handler and why", ["handler", "reason"])
BREAKER_STATE = Gauge(
    "agentops_breaker_state",
    "Circuit breaker state (0 closed, 1 half-open, 2 open)",
    ["breaker"],
    multiprocess_mode="mostrecent",
)
BREAKER_TRANSITIONS = Counter("agentops_breaker_transitions_total", "Breaker state changes", ["breaker", "to_state"])
CACHE_REQUESTS = Counter(
    "agentops_cache_requests_total", "Cache look-ups by cache type and result", ["cache", "result"]
)
# The semantic cache (runtime/semantic_cache.py): hit | near_miss | miss | lookalike | skipped, per route.
SEMANTIC_CACHE = Counter(
    "agentops_semantic_cache_total", "Semantic cache look-ups by route and result", ["route", "result"]
)
SEMANTIC_SIMILARITY = Histogram(
    "agentops_semantic_cache_similarity",
    "Best cosine similarity of each semantic cache look-up that found a neighbour",
    ["route"],
    buckets=(0.5, 0.6, 0.7, 0.8, 0.85, 0.88, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 1.0),
)

# --- escalations -------------------------------------------------------------------------------
ESCALATIONS = Counter(
    "agentops_escalations_total", "Escalations created by reason and priority", ["reason", "priority"]
)
DECISION_SECONDS = Histogram(
    "agentops_decision_seconds",
    "Time from escalation to decision",
    ["decision"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 3600),
)

# --- budgets -----------------------------------------------------------------------------------
BUDGET_UTILIZATION = Gauge(
    "agentops_budget_utilization_ratio",
    "Spent / limit per budget",
    ["budget"],
    multiprocess_mode="mostrecent",
)
BUDGET_REJECTIONS = Counter("agentops_budget_rejections_total", "Reservations refused by budget scope", ["scope"])
ALERTS_FIRED = Counter("agentops_alerts_total", "Alerts raised by kind", ["kind"])
WEBHOOK_DELIVERIES = Counter("agentops_webhook_deliveries_total", "Webhook delivery attempts by outcome", ["outcome"])

# --- platform ----------------------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "agentops_http_requests_total", "HTTP requests by method and status class", ["method", "status"]
)
HTTP_SECONDS = Histogram("agentops_http_request_seconds", "HTTP request duration", ["method"], buckets=LATENCY_BUCKETS)
CELERY_TASKS = Counter("agentops_celery_tasks_total", "Celery tasks by name and outcome", ["task", "outcome"])
LIVE_EVENTS = Counter("agentops_live_events_total", "Channels events published by group kind", ["group"])


def _touch_seed_series() -> None:
    """In multiprocess mode a series appears only once some process writes it. Writing zeros for the
    seed's label values makes the families visible to dashboards before the first agent runs."""
    for session_type in ("run", "api", "gateway"):
        for success in ("true", "false"):
            REQUESTS.labels(session_type=session_type, success=success)
    for operation in ("planning", "tool_calls", "response", "reflection"):
        RESPONSE_SECONDS.labels(operation_type=operation)


_touch_seed_series()

# --- OpenAI-compatible gateway -------------------------------------------------------------------
GATEWAY_REQUESTS = Counter(
    "agentops_gateway_requests_total", "Gateway chat completions by status code and mode", ["status", "mode"]
)
GATEWAY_IN_FLIGHT = Gauge(
    "agentops_gateway_requests_in_flight",
    "Gateway requests being served now (live request tasks, summed over web processes)",
    multiprocess_mode="livesum",
)
GATEWAY_OVERHEAD_SECONDS = Histogram(
    "agentops_gateway_overhead_seconds",
    "Time a gateway answer spent in agentops (arrival to answer, upstream calls excluded)",
    ["mode"],
    buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)


# --- computed when /metrics is scraped ------------------------------------------------------------
# Read from Redis by the scraping process (agentops/ops/views.py registers the collector), never written
# by processes: a per-process gauge would be summed (or picked) across processes in multiprocess mode.


@dataclass(frozen=True)
class ScrapeGauge:
    """A gauge whose samples are read at scrape time: ``(label values, value)`` pairs from a reader."""

    name: str
    documentation: str
    labelnames: tuple[str, ...] = ()

    def family(self, samples: Iterable[tuple[tuple[str, ...], float]]) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in samples:
            family.add_metric(list(labels), value)
        return family


ACTIVE_SESSIONS = ScrapeGauge(
    "agent_active_sessions",
    "Agent sessions (agent and session id) with any traffic in the last 5 minutes: runs, gateway calls, usage reports",
)
QUEUE_DEPTH = ScrapeGauge("agent_queue_depth", "Messages waiting in each Celery queue (Redis LLEN)", ("queue",))
# Counted at scrape time (one grouped count): exact whichever process answers, and nothing for an escalation's
# creation or decision to pay (a count after each change was a tenth of POST /api/v1/actions' escalate path).
ESCALATIONS_PENDING = ScrapeGauge("agentops_escalations_pending", "Escalations waiting for a human", ("queue",))
SCRAPE_GAUGES = (ACTIVE_SESSIONS, QUEUE_DEPTH, ESCALATIONS_PENDING)

Reader = Callable[[], Iterable[tuple[tuple[str, ...], float]] | None]


class ScrapeCollector(Collector):
    """Collects each ScrapeGauge from its reader. A reader answering None (its store unreachable) leaves its
    gauge out of the scrape: an absent series alerts, a made-up 0 would not."""

    def __init__(self, readers: Mapping[ScrapeGauge, Reader]) -> None:
        self.readers = readers

    def collect(self):
        for gauge, read in self.readers.items():
            samples = read()
            if samples is not None:
                yield gauge.family(samples)

    def describe(self):
        return [gauge.family(()) for gauge in self.readers]
