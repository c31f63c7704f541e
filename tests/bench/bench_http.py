"""/healthz vs the bare Django JSON view, both served by the real uvicorn server under concurrent load.

The bare view is the baseline later API benchmarks compare against.
"""

from __future__ import annotations

from tests.bench.common import load, uvicorn_server
from tests.bench.harness import Result, interleaved, median_of_rounds

ROUNDS, REQUESTS, CONCURRENCY = 6, 600, 16


def run() -> list[Result]:
    with uvicorn_server() as url:
        load(url + "/_bench/bare", 200, CONCURRENCY)  # warm up both paths
        load(url + "/healthz", 200, CONCURRENCY)
        throughput = {"subject": [], "baseline": [], "lean": [], "full": []}

        def measure(path: str, key: str):
            def one_round():
                latencies, elapsed = load(url + path, REQUESTS, CONCURRENCY)
                throughput[key].append(REQUESTS / elapsed)
                return latencies

            return one_round

        subject, baseline = interleaved(ROUNDS, measure("/healthz", "subject"), measure("/_bench/bare", "baseline"))
        interleaved(3, measure("/_bench/bare", "lean"), measure("/bench-full-stack/bare", "full"))
    p50, base50 = median_of_rounds(subject), median_of_rounds(baseline)
    p95, base95 = median_of_rounds(subject, 95), median_of_rounds(baseline, 95)
    rps, base_rps = _median(throughput["subject"]), _median(throughput["baseline"])
    lean_rps, full_rps = _median(throughput["lean"]), _median(throughput["full"])
    return [
        Result(
            "http: /healthz p50 latency, c=16 (vs bare view)",
            "ms",
            p50,
            base50,
            "ratio <= 1.15",
            p50 / base50 <= 1.15,
            p95=p95,
            baseline_p95=base95,
        ),
        Result(
            "http: /healthz throughput, c=16 (vs bare view)",
            "req/s",
            rps,
            base_rps,
            "ratio >= 0.85",
            rps / base_rps >= 0.85,
        ),
        Result(
            "http: bare view, lean machine stack (vs full browser stack)",
            "req/s",
            lean_rps,
            full_rps,
            "ratio >= 1.5",
            lean_rps / full_rps >= 1.5,
            note="why machine endpoints skip sync middleware",
        ),
    ]


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]
