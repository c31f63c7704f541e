"""The fault matrix: every fault kind, injected by the real mock OpenAI server over real HTTP, through the
real guard pipeline (openai SDK provider, Redis-backed breakers and adaptive timeouts).

For each fault: attempts on the primary model, the waits between them (Retry-After honoured and capped by
the deadline), the classification and the final outcome (recovered / backup / rules / human). Delays are
scaled down by config (no jitter, bases of 10–50 ms) so the whole matrix runs in a few seconds.

The table is printed at the end of the module (``pytest -s``) and written to ``.run/fault-matrix.md``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from agentops.runtime.breaker import BreakerSettings
from agentops.runtime.config import RuntimeConfig, StaticConfigSource, TimeoutSettings
from agentops.runtime.errors import ErrorClass
from agentops.runtime.guard import GuardDeps, GuardResult, guarded_llm, make_breaker_registry
from agentops.runtime.protocols import RecordingBudgetGate, RecordingUsageSink, ScriptedEscalator
from agentops.runtime.providers import LLMRequest, OpenAICompatProvider, Rule
from agentops.runtime.retry import RetryPolicy, RetrySettings
from agentops.runtime.routing import Route, Target
from agentops.runtime.timeouts import AdaptiveSettings, AdaptiveTimeouts, Deadline
from tests.fixtures.runtime import REPO_ROOT

PRIMARY, BACKUP = "mock-large", "mock-small"
LLM_TIMEOUT = 0.3

RETRY = RetrySettings(
    default=RetryPolicy(3, base=0.02, max_delay=1.0, jitter=False),
    by_class={
        ErrorClass.CONNECTION: RetryPolicy(5, base=0.01, max_delay=1.0, jitter=False),
        ErrorClass.RATE_LIMIT: RetryPolicy(3, base=0.05, max_delay=1.0, jitter=False),
        ErrorClass.SERVICE_UNAVAILABLE: RetryPolicy(4, base=0.02, max_delay=1.0, jitter=False),
        ErrorClass.AUTHENTICATION: RetryPolicy(0),
        ErrorClass.BAD_REQUEST: RetryPolicy(0),
    },
    budget=6,
)

CONFIG = RuntimeConfig(
    retry=RETRY,
    timeouts=TimeoutSettings(llm=LLM_TIMEOUT, request=10.0),
    # Latencies are recorded, but never enough history here: every attempt uses the layered llm timeout.
    adaptive=AdaptiveSettings(min_samples=10_000),
    # High enough that the per-class retry limits show; one row lowers it to show the breaker stepping in.
    breaker=BreakerSettings(failure_threshold=20, recovery_timeout=60.0),
    routes=(Route("planning", (Target("mock", PRIMARY), Target("mock", BACKUP))),),
    default_chain=(Target("mock", BACKUP),),
    rules=(Rule(r"\bopening hours\b", "We are open 9-17.", name="hours"),),
)

ROWS: list[dict] = []


@dataclass
class Case:
    id: str
    primary: list[str]
    outcome: str  # handler that answered
    error_class: ErrorClass
    attempts: int
    waits: list[float]
    transient: bool = True
    backup: list[str] = field(default_factory=list)
    prompt: str = "Plan a three-day trip to Rome."
    deadline: float | None = None
    status: int | None = None
    hop_outcome: str | None = None  # primary hop outcome, when not implied
    reason: str | None = None  # stop reason / validation reason of the primary hop
    breaker: BreakerSettings | None = None
    force_open: bool = False
    backup_attempts: int | None = None
    note: str = ""


CASES = [
    Case("reset", ["reset"], "primary", ErrorClass.CONNECTION, 2, [0.01]),
    Case(
        "reset ×6",
        ["reset"] * 6,
        "backup",
        ErrorClass.CONNECTION,
        6,
        [0.01, 0.02, 0.04, 0.08, 0.16],
        reason="max_retries",
    ),
    Case("hang (past the 0.3 s llm timeout)", ["hang:5000"], "primary", ErrorClass.TIMEOUT, 2, [0.02]),
    Case("hang ×4", ["hang:5000"] * 4, "backup", ErrorClass.TIMEOUT, 4, [0.02, 0.04, 0.08], reason="max_retries"),
    Case(
        "429 Retry-After 0.2 s",
        ["429:0.2"],
        "primary",
        ErrorClass.RATE_LIMIT,
        2,
        [0.2],
        status=429,
        note="Retry-After used instead of the 0.05 s curve",
    ),
    Case(
        "429 ×4 Retry-After 0.05 s",
        ["429:0.05"] * 4,
        "backup",
        ErrorClass.RATE_LIMIT,
        4,
        [0.05] * 3,
        status=429,
        reason="max_retries",
    ),
    Case(
        "429 Retry-After 30 s, 2 s deadline",
        ["429:30"],
        "backup",
        ErrorClass.RATE_LIMIT,
        1,
        [],
        status=429,
        deadline=2.0,
        reason="deadline",
        note="wait would pass the deadline: no retry",
    ),
    Case("500", ["500"], "primary", ErrorClass.SERVICE_UNAVAILABLE, 2, [0.02], status=500),
    Case(
        "503 ×5",
        ["503"] * 5,
        "backup",
        ErrorClass.SERVICE_UNAVAILABLE,
        5,
        [0.02, 0.04, 0.08, 0.16],
        status=503,
        reason="max_retries",
    ),
    Case("401", ["401"], "backup", ErrorClass.AUTHENTICATION, 1, [], transient=False, status=401, reason="permanent"),
    Case("400", ["400"], "backup", ErrorClass.BAD_REQUEST, 1, [], transient=False, status=400, reason="permanent"),
    Case("malformed JSON", ["malformed"], "primary", ErrorClass.INVALID_RESPONSE, 2, [0.02]),
    Case(
        "empty answer",
        ["empty"],
        "backup",
        ErrorClass.REJECTED_ANSWER,
        1,
        [],
        transient=False,
        hop_outcome="invalid",
        reason="empty",
    ),
    Case(
        "refusal",
        ["refusal"],
        "backup",
        ErrorClass.REJECTED_ANSWER,
        1,
        [],
        transient=False,
        hop_outcome="invalid",
        reason="refusal",
    ),
    Case(
        "500 ×5, backup 401, rule matches",
        ["500"] * 5,
        "rules",
        ErrorClass.SERVICE_UNAVAILABLE,
        5,
        [0.02, 0.04, 0.08, 0.16],
        status=500,
        backup=["401"],
        prompt="What are your opening hours?",
        reason="max_retries",
        backup_attempts=1,
    ),
    Case(
        "401, backup 400, no rule",
        ["401"],
        "human",
        ErrorClass.AUTHENTICATION,
        1,
        [],
        transient=False,
        status=401,
        backup=["400"],
        reason="permanent",
        backup_attempts=1,
        note="escalation reason all_fallbacks_failed",
    ),
    Case(
        "503 ×5 on both: shared retry budget 6",
        ["503"] * 5,
        "human",
        ErrorClass.SERVICE_UNAVAILABLE,
        5,
        [0.02, 0.04, 0.08, 0.16],
        status=503,
        backup=["503"] * 5,
        reason="max_retries",
        backup_attempts=3,
        note="backup gets the 2 retries left, then budget_exhausted",
    ),
    Case(
        "breaker forced open",
        [],
        "backup",
        None,
        0,
        [],
        hop_outcome="breaker_open",
        reason="breaker_open",
        force_open=True,
    ),
    Case(
        "reset ×6, breaker threshold 3",
        ["reset"] * 6,
        "backup",
        ErrorClass.CONNECTION,
        3,
        [0.01, 0.02],
        hop_outcome="breaker_open",
        reason="breaker_open",
        breaker=BreakerSettings(failure_threshold=3),
        note="the breaker opens mid-retry; the 4th attempt is refused",
    ),
]


@pytest.fixture(scope="module", autouse=True)
def fault_matrix_table():
    yield
    if not ROWS:
        return
    header = (
        "| fault (primary) | attempts | waits (s) | classified as | transient | stop | answered by | ms |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['fault']} | {r['attempts']} | {r['waits']} | {r['class']} | {r['transient']} | {r['stop']} "
        f"| {r['answered']} | {r['ms']} |"
        for r in ROWS
    ]
    table = header + "\n".join(lines) + "\n"
    out = REPO_ROOT / ".run" / "fault-matrix.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table)
    print("\n\nFault matrix (also in .run/fault-matrix.md):\n\n" + table)


@pytest.fixture
def env(mock, redis_client):
    source = StaticConfigSource(CONFIG)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        time.sleep(seconds)

    deps = GuardDeps(
        config=source,
        providers={"mock": OpenAICompatProvider("mock", mock.base_url, "test-key")},
        breakers=make_breaker_registry(redis_client, source),
        adaptive=AdaptiveTimeouts(redis_client, CONFIG.adaptive),
        budget=RecordingBudgetGate(),
        escalator=ScriptedEscalator(answer="a reviewer's answer"),
        usage=RecordingUsageSink(),
        sleep=sleep,
        record_latency_in_background=False,
    )
    return deps, source, waits


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, env, mock, redis_client):
    deps, source, waits = env
    if case.breaker is not None:
        source.set(CONFIG.replace(breaker_overrides={f"mock:{PRIMARY}": case.breaker}))
    if case.force_open:
        deps.breakers.get("mock", PRIMARY).force_open()
    if case.primary:
        mock.script(PRIMARY, case.primary)
    if case.backup:
        mock.script(BACKUP, case.backup)
    request = LLMRequest([{"role": "user", "content": case.prompt}], operation="planning", max_tokens=200)
    deadline = Deadline.after(case.deadline) if case.deadline else None

    started = time.perf_counter()
    result: GuardResult = guarded_llm(request, deps=deps, deadline=deadline)
    elapsed_ms = (time.perf_counter() - started) * 1000

    primary = result.hops[0]
    assert result.handler == case.outcome, result.hops
    assert primary.handler == "primary" and primary.target == f"mock:{PRIMARY}"
    assert primary.attempts == case.attempts
    assert primary.error_class == (case.error_class.value if case.error_class else None)
    assert primary.waits == pytest.approx(tuple(case.waits))
    primary_waits = list(primary.waits)
    assert waits[: len(primary_waits)] == pytest.approx(primary_waits)
    if case.status is not None:
        assert primary.status == case.status
    expected_hop = case.hop_outcome or ("ok" if case.outcome == "primary" else "failed")
    assert primary.outcome == expected_hop
    if case.reason is not None:
        assert primary.reason == case.reason
    if case.error_class is not None:
        assert case.error_class.transient == case.transient or case.hop_outcome == "invalid"

    # What the server saw matches what the guard reports.
    seen = mock.stats()["by_model"]
    assert seen.get(PRIMARY, 0) == case.attempts
    if case.backup_attempts is not None:
        assert result.hops[1].attempts == case.backup_attempts == seen.get(BACKUP, 0)
    if case.outcome == "backup":
        assert result.model == BACKUP and result.text.startswith("Mock answer to:")
    if case.outcome == "rules":
        assert result.text == "We are open 9-17."
    if case.outcome == "human":
        assert result.text == "a reviewer's answer"
        assert deps.escalator.calls[-1][2] == "all_fallbacks_failed"
    if case.id.startswith("503 ×5 on both"):
        assert result.hops[1].reason == "budget_exhausted"
    # The reservation is always closed, with the real usage of the answering model.
    assert deps.budget.open_reservations == 0
    if case.outcome in ("primary", "backup"):
        assert deps.budget.settled[-1][1]["input_tokens"] > 0  # the settled reservation is the usage record

    ROWS.append(
        {
            "fault": case.id,
            "attempts": primary.attempts,
            "waits": ", ".join(f"{w:g}" for w in primary.waits) or "—",
            "class": (primary.error_class or "—")
            + (f" ({primary.status})" if primary.status else "")
            + (f" [{primary.reason}]" if primary.outcome == "invalid" else ""),
            "transient": "—" if case.error_class is None else ("no" if not case.transient else "yes"),
            "stop": primary.reason or "recovered",
            "answered": result.handler
            + (
                f" (backup {result.hops[1].attempts} att., {result.hops[1].reason or 'ok'})"
                if case.backup_attempts and case.outcome != "backup"
                else ""
            )
            + (f" — {case.note}" if case.note else ""),
            "ms": f"{elapsed_ms:.0f}",
        }
    )
