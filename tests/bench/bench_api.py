"""POST /api/v1/actions (ask permission) vs the bare Django JSON view, same uvicorn server, same run.

Subjects: the auto-approve path (no policy rule fires: a plain operation, high confidence, low value → 201
"approved") and the escalate path (a sensitive `send_*` operation → an Escalation row, its audit entry and
the live "queue changed" event → 201 "pending"). Both go through the whole API: bearer key verification
(cached), the per-key Redis token bucket, ninja validation, the policy and the response schema.
Baseline: GET /_bench/bare (the foundation bench's bare view on the lean machine stack).

The three are interleaved in rounds at moderate concurrency (CONCURRENCY requests in flight, loopback);
reported: medians of rounds of requests/s and of p50 / p99 latency.
Goals (issue #7): ≥ 60 % (auto-approve) and ≥ 35 % (escalate) of the baseline's throughput; the
auto-approve path adds ≤ 3 ms to the p50.
"""

from __future__ import annotations

import statistics

import httpx

from tests.bench.common import load, migrate, uvicorn_server
from tests.bench.harness import Result, median_of_rounds

ROUNDS, REQUESTS, CONCURRENCY, WARMUP = 6, 400, 8, 150
AGENT = "bench-api"
AUTO = {"session_id": "bench", "operation": "lookup_order", "arguments": {"order": 42}, "confidence": 0.95, "value": 10}
ESCALATE = {
    "session_id": "bench",
    "operation": "send_refund",
    "arguments": {"order": 42, "amount": 12.5},
    "confidence": 0.95,
    "value": 12.5,
    "context": {"user_input": "refund my order", "agent_analysis": "the order arrived broken"},
}
SERVER_ENV = {"API_RATE_BURST": "100000000", "API_RATE_PER_SECOND": "100000000", "LOG_LEVEL": "WARNING"}


def _key() -> tuple[int, str]:
    from agentops.keys import actions as key_actions

    row, key = key_actions.create_api_key(AGENT, scopes=["actions"], name="bench_api", created_by="bench")
    return row.pk, key


def _cleanup(key_id: int) -> None:
    from agentops.keys.models import ApiKey
    from review.models import ActionRequest, Escalation

    ActionRequest.objects.filter(agent__name=AGENT).delete()
    Escalation.objects.filter(agent__name=AGENT).delete()
    ApiKey.objects.filter(pk=key_id).delete()


def _check(url: str, headers: dict) -> None:
    """The subjects answer what they should before they are timed."""
    for body, status in ((AUTO, "approved"), (ESCALATE, "pending")):
        response = httpx.post(url + "/api/v1/actions", json=body, headers=headers, timeout=10)
        if response.status_code != 201 or response.json().get("status") != status:
            raise RuntimeError(f"POST /actions {body['operation']}: {response.status_code} {response.text[:300]}")


def run() -> list[Result]:
    migrate()
    key_id, key = _key()
    headers = {"Authorization": f"Bearer {key}"}
    samples: dict[str, list[list[float]]] = {"bare": [], "auto": [], "escalate": []}
    rps: dict[str, list[float]] = {"bare": [], "auto": [], "escalate": []}
    try:
        with uvicorn_server(SERVER_ENV) as url:
            _check(url, headers)
            subjects = {
                "bare": (url + "/_bench/bare", {}),
                "auto": (url + "/api/v1/actions", {"method": "POST", "json": AUTO, "headers": headers}),
                "escalate": (url + "/api/v1/actions", {"method": "POST", "json": ESCALATE, "headers": headers}),
            }
            for target, kwargs in subjects.values():  # warm up every path (connections, caches, plans)
                load(target, WARMUP, CONCURRENCY, **kwargs)
            order = list(subjects)
            for index in range(ROUNDS):
                for name in order[index % 3 :] + order[: index % 3]:  # rotate who goes first
                    target, kwargs = subjects[name]
                    latencies, elapsed = load(target, REQUESTS, CONCURRENCY, **kwargs)
                    samples[name].append(latencies)
                    rps[name].append(REQUESTS / elapsed)
    finally:
        _cleanup(key_id)

    base_rps = statistics.median(rps["bare"])
    base50, base99 = median_of_rounds(samples["bare"]), median_of_rounds(samples["bare"], 99)
    results = []
    for name, label, goal in (("auto", "auto-approve", 0.60), ("escalate", "escalate", 0.35)):
        value = statistics.median(rps[name])
        p50, p99 = median_of_rounds(samples[name]), median_of_rounds(samples[name], 99)
        results.append(
            Result(
                f"api: POST /actions {label} throughput, c={CONCURRENCY} (vs bare view)",
                "req/s",
                value,
                base_rps,
                f"ratio >= {goal:.2f}",
                value / base_rps >= goal,
                note=f"p50 {p50:.2f} ms p99 {p99:.2f} ms vs bare p50 {base50:.2f} ms p99 {base99:.2f} ms; "
                f"{ROUNDS} rounds of {REQUESTS}",
            )
        )
        added = p50 - base50
        results.append(
            Result(
                f"api: POST /actions {label} p50 latency, c={CONCURRENCY} (vs bare view)",
                "ms",
                p50,
                base50,
                "added <= 3.0" if name == "auto" else "reported",
                added <= 3.0 if name == "auto" else True,
                p95=median_of_rounds(samples[name], 95),
                baseline_p95=median_of_rounds(samples["bare"], 95),
                note=f"added p50 {added:.2f} ms; p99 {p99:.2f} ms vs {base99:.2f} ms",
            )
        )
    return results
