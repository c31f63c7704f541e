"""Escalation committed → its chat message at the Slack-compatible webhook, through the real path: the
``review.notify`` task sent after commit, a Celery worker (prefork, concurrency 1) running the chat channel
(settings row read, Block Kit message built, POST through the outbound guard) — against the bare POST of the
same JSON to the same mock with httpx from this process, interleaved in rounds.

Both are timed to the moment the mock received the message (one clock: the mock runs in this process). The
subject's clock starts at the commit (an on-commit hook registered before the escalation's own). Items are
sent one at a time: this measures latency, not throughput. The worker listens on a private queue, so no
other worker on the same Redis takes these tasks.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import httpx

from agentops.celery import app
from tests.bench.common import bench_worker, migrate
from tests.bench.harness import Result, interleaved, median_of_rounds, percentile
from tests.fixtures.slack import SIGNING_SECRET, SlackMock

ROOT = Path(__file__).resolve().parents[2]
QUEUE = f"bench-chat-{os.getpid()}"
ROUNDS, PER_ROUND, WARMUP = 5, 10, 5  # 50 items each side
GOAL_ADDED_MS = 250.0  # the p95 the task path may add to a bare post (the issue: "p95 vs the bare send")
AGENT = "bench-chat"


def _escalation_round(mock: SlackMock, agent, count: int) -> list[float]:
    """Commit ``count`` escalations one at a time; ms from each commit to its message at the mock."""
    from django.db import transaction

    from review import actions as review

    samples = []
    for n in range(count):
        seen = len(mock.messages)
        stamp: list[float] = []
        with transaction.atomic():
            transaction.on_commit(lambda stamp=stamp: stamp.append(time.monotonic()))  # first hook: the commit
            review.create_escalation(
                operation="send_note",
                reason="sensitive_operation",
                priority="high",
                deadline_seconds=600,
                agent=agent,
                arguments={"to": f"bench-{n}@example.com", "body": "refund issued"},
                rule="bench",
            )
        message = mock.wait_for(lambda seen=seen: mock.messages[seen] if len(mock.messages) > seen else None, 30)
        samples.append((message.at - stamp[0]) * 1000)
    return samples


def _bare_round(mock: SlackMock, client: httpx.Client, payload: dict, count: int) -> list[float]:
    """POST the same message JSON to the same webhook ``count`` times; ms from the send to its arrival."""
    samples = []
    for _ in range(count):
        seen = len(mock.messages)
        started = time.monotonic()
        client.post(mock.webhook_url, json=payload)
        message = mock.wait_for(lambda seen=seen: mock.messages[seen] if len(mock.messages) > seen else None, 30)
        samples.append((message.at - started) * 1000)
    return samples


def run() -> list[Result]:
    from agentops.runs.actions import agents as agent_actions
    from review.actions import save_chat_settings
    from review.channels import chat
    from review.models import ChatSettings, Escalation

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    migrate(env)
    mock = SlackMock()
    previous_row = ChatSettings.objects.filter(pk=1).first()
    save_chat_settings(ChatSettings(webhook_url=mock.webhook_url, signing_secret=SIGNING_SECRET, language="en"))
    agent = agent_actions.ensure_agent(AGENT, description="Benchmark: escalations announced in chat")
    previous_routes = app.conf.task_routes
    app.conf.update(task_routes={"review.notify": {"queue": QUEUE}})
    try:
        with bench_worker("chat", QUEUE, env), httpx.Client(timeout=10) as client:
            _escalation_round(mock, agent, WARMUP)
            sample = Escalation.objects.filter(agent=agent).latest("pk")
            payload = chat.message_for(sample, "new", "en")
            _bare_round(mock, client, payload, WARMUP)
            subject, baseline = interleaved(
                ROUNDS,
                lambda: _escalation_round(mock, agent, PER_ROUND),
                lambda: _bare_round(mock, client, payload, PER_ROUND),
            )
    finally:
        app.conf.update(task_routes=previous_routes)
        Escalation.objects.filter(agent=agent).delete()
        ChatSettings.objects.filter(pk=1).delete()
        if previous_row is not None:
            previous_row.save()
        mock.close()
    all_subject = [s for r in subject for s in r]
    all_baseline = [s for r in baseline for s in r]
    p50, p95 = median_of_rounds(subject), percentile(all_subject, 95)
    base50, base95 = median_of_rounds(baseline), percentile(all_baseline, 95)
    return [
        Result(
            "chat: escalation commit → message at webhook (vs bare POST of it)",
            "ms",
            p50,
            base50,
            f"p95 added <= {GOAL_ADDED_MS:g} ms",
            p95 - base95 <= GOAL_ADDED_MS,
            p95=p95,
            baseline_p95=base95,
            note=f"{len(all_subject)} items each side in {ROUNDS} interleaved rounds, one at a time; worker "
            f"prefork c=1; max {max(all_subject):.1f} ms vs {max(all_baseline):.1f} ms; "
            f"mean {statistics.mean(all_subject):.1f} vs {statistics.mean(all_baseline):.1f} ms",
        )
    ]
