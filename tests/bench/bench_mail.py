"""Escalation committed → its review mail in the SMTP server, vs a bare send of the same mail from this process.

Subject: this process commits an escalation with review.actions.create_escalation (an opted-in reviewer exists),
which enqueues ``review.notify`` after commit; a Celery worker (prefork, concurrency 1, on a private queue, with
EMAIL_HOST pointing at an aiosmtpd server in this process) runs it — recipients, the delivery row, the mail
composed in the reviewer's language with signed links, one SMTP session, the audit event. Measured from the
commit to the message's arrival in the server (its ``X-Agentops-Escalation`` header names the item).

Baseline, interleaved in rounds: the same mail (composed beforehand) sent from this process with Django's SMTP
backend to the same server, from the call to its arrival. The difference is what the real path adds: the broker
round trip, the worker's reads and writes, composing, and the connection set-up.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from agentops.celery import app
from tests.bench.common import bench_worker, migrate
from tests.bench.harness import Result, interleaved, percentile

ROOT = Path(__file__).resolve().parents[2]
AGENT = "bench-mail"
REVIEWER = "bench-mail-reviewer"
QUEUE = f"bench-mail-{os.getpid()}"
ROUNDS, PER_ROUND, WARMUP = 5, 10, 3  # 50 measured mails each way
GOAL_MS = 2000.0


@contextmanager
def _smtp():
    from tests.fixtures.smtp import running_inbox  # imported late: pytest fixtures module, loaded after django.setup

    with running_inbox() as inbox:
        yield inbox


def _prepare():
    from django.contrib.auth import get_user_model

    from agentops.accounts import actions as account_actions
    from agentops.accounts.roles import REVIEWER as REVIEWER_ROLE
    from agentops.runs.actions import agents as agent_actions
    from review import mail_actions
    from review.models import Escalation, ReviewerProfile

    account_actions.ensure_role_groups()
    user = account_actions.ensure_user(REVIEWER, uuid.uuid4().hex, roles=(REVIEWER_ROLE,))
    # this reviewer alone is mailed: other opted-in profiles in the bench database would add their own sends
    ReviewerProfile.objects.exclude(user=user).update(email_opt_in=False)
    mail_actions.save_reviewer_settings(
        user, email=f"{REVIEWER}@example.com", email_opt_in=True, email_priorities="high,medium,low"
    )
    agent = agent_actions.ensure_agent(AGENT, description="Benchmark: escalations mailed to a reviewer")
    Escalation.objects.filter(agent=agent).delete()
    return get_user_model().objects.get(pk=user.pk), agent


def _arrived(inbox, pk: int, timeout: float = 30.0) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for received in inbox.messages:
            if received.message["X-Agentops-Escalation"] == str(pk):
                return received.arrived
        time.sleep(0.002)
    raise RuntimeError(f"the mail of escalation {pk} did not arrive in {timeout} s")


def _escalate(agent, index: int):
    from django.db import transaction

    from review.actions import create_escalation

    committed: list[float] = []
    with transaction.atomic():
        transaction.on_commit(lambda: committed.append(time.time()))  # runs first after COMMIT, before the enqueue
        item = create_escalation(
            operation="send_refund_note",
            reason="sensitive_operation",
            priority="high",
            deadline_seconds=600,
            agent=agent,
            session_id=f"bench-mail-{index}",
            arguments={"to": f"customer-{index}@example.com", "amount": index},
            context={"user_input": f"bench item {index}"},
            rule="operation name has the word 'send' · bench",
        )
    return item, committed[0]


def _subject_round(inbox, agent, count: int) -> list[float]:
    samples = []
    for index in range(count):
        item, committed = _escalate(agent, index)
        samples.append((_arrived(inbox, item.pk) - committed) * 1000)
    return samples


def _baseline_round(inbox, user, agent, count: int, host: str, port: int) -> list[float]:
    from django.core.mail import get_connection

    from review.channels import email as email_channel
    from review.models import Escalation

    template = Escalation.objects.filter(agent=agent).order_by("-pk").first()
    samples = []
    for index in range(count):
        mail = email_channel.compose(template, user, "new")  # composed beforehand: the baseline is the send alone
        marker = f"-{index}-{uuid.uuid4().hex[:6]}"
        started = time.time()
        connection = get_connection("django.core.mail.backends.smtp.EmailBackend", host=host, port=port)
        email_channel.message(mail, user.email, connection, **{"X-Agentops-Escalation": marker}).send()
        deadline = time.monotonic() + 30
        while not any(m.message["X-Agentops-Escalation"] == marker for m in inbox.messages):
            if time.monotonic() > deadline:
                raise RuntimeError("the baseline mail did not arrive")
            time.sleep(0.002)
        arrived = next(m.arrived for m in inbox.messages if m.message["X-Agentops-Escalation"] == marker)
        samples.append((arrived - started) * 1000)
    return samples


def run() -> list[Result]:
    from review.models import Escalation

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    migrate(env)
    user, agent = _prepare()
    previous_routes = app.conf.task_routes
    app.conf.update(task_routes={"review.notify": {"queue": QUEUE}})  # our notices go to our worker
    try:
        with _smtp() as inbox:
            worker_env = {
                **env,
                "EMAIL_HOST": inbox.host,
                "EMAIL_PORT": str(inbox.port),
                "PUBLIC_URL": "http://127.0.0.1:8000",
            }
            with bench_worker("mail", QUEUE, worker_env):
                _subject_round(inbox, agent, WARMUP)
                _baseline_round(inbox, user, agent, WARMUP, inbox.host, inbox.port)
                subject, baseline = interleaved(
                    ROUNDS,
                    lambda: _subject_round(inbox, agent, PER_ROUND),
                    lambda: _baseline_round(inbox, user, agent, PER_ROUND, inbox.host, inbox.port),
                )
    finally:
        app.conf.update(task_routes=previous_routes)
        Escalation.objects.filter(agent=agent).delete()
    everything = [s for r in subject for s in r]
    every_baseline = [s for r in baseline for s in r]
    p50, p95 = percentile(everything, 50), percentile(everything, 95)
    base50, base95 = percentile(every_baseline, 50), percentile(every_baseline, 95)
    note = (
        f"{len(everything)} mails each way in {ROUNDS} interleaved rounds; commit → mail p50 {p50:.1f} / p95 "
        f"{p95:.1f} / max {max(everything):.1f} ms; bare send p50 {base50:.1f} / p95 {base95:.1f} ms; "
        f"median of round medians {statistics.median(statistics.median(r) for r in subject):.1f} ms"
    )
    print(f"  {note}", flush=True)
    return [
        Result(
            "review mail: escalation commit → mail in SMTP server (vs bare send)",
            "ms",
            p50,
            base50,
            f"p95 <= {GOAL_MS:g} ms",
            p95 <= GOAL_MS,
            p95=p95,
            baseline_p95=base95,
            note=note,
        )
    ]
