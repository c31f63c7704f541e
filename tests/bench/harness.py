"""Benchmark harness: every subject is measured against a baseline in the same run, interleaved in
rounds on the same two cores, and reported as medians and a ratio (never one absolute time).

A benchmark module `tests/bench/bench_*.py` defines `run() -> list[Result]`.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[2] / ".run" / "bench" / "results.json"


@dataclass
class Result:
    name: str
    unit: str
    value: float  # the subject's figure (median of rounds)
    baseline: float  # the baseline's figure in the same run
    goal: str  # e.g. "ratio <= 1.10" or "added <= 1.0"
    passed: bool
    p95: float | None = None
    baseline_p95: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    def as_json(self) -> dict:
        data = {
            "name": self.name,
            "unit": self.unit,
            "value": round(self.value, 4),
            "baseline": round(self.baseline, 4),
            "ratio": round(self.ratio, 4),
            "goal": self.goal,
            "pass": self.passed,
        }
        extra = {k: v for k, v in asdict(self).items() if k in {"p95", "baseline_p95", "note"} and v not in (None, "")}
        return {**data, **extra}


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def interleaved(rounds: int, subject: Callable[[], list[float]], baseline: Callable[[], list[float]]):
    """Run baseline and subject alternately `rounds` times; return (subject samples per round,
    baseline samples per round). Each callable returns the samples of one round."""
    subject_rounds, baseline_rounds = [], []
    for index in range(rounds):
        order = (baseline, subject) if index % 2 == 0 else (subject, baseline)
        for fn in order:
            (baseline_rounds if fn is baseline else subject_rounds).append(fn())
    return subject_rounds, baseline_rounds


def median_of_rounds(rounds: list[list[float]], q: float = 50) -> float:
    return statistics.median(percentile(samples, q) for samples in rounds)


def print_table(results: list[Result]) -> None:
    header = (
        f"{'benchmark':<52} {'unit':<8} {'subject':>10} {'p95':>9} {'baseline':>10} {'ratio':>7}  {'goal':<24} result"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        p95 = f"{r.p95:.3f}" if r.p95 is not None else "-"
        print(
            f"{r.name:<52} {r.unit:<8} {r.value:>10.3f} {p95:>9} {r.baseline:>10.3f} {r.ratio:>7.3f}  "
            f"{r.goal:<24} {'PASS' if r.passed else 'MISS'}"
        )


def write_results(results: list[Result]) -> Path:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps([r.as_json() for r in results], indent=2) + "\n")
    return RESULTS
