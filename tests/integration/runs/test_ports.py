"""Runs reach review, budgets and the guard only through the ports that agentops.wiring installs from
AgentopsConfig.ready() (agentops/runs/ports.py): every kind of process runs django.setup(), so every one has
them — this test process (as the web does), the Celery worker the tests start, and a management command."""

from __future__ import annotations

import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from agentops import wiring
from agentops.runs import ports
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Step
from review.escalator import ReviewEscalations
from review.models import Escalation
from tests.fixtures.factories import run_in
from tests.fixtures.stack import REPO_ROOT
from tests.fixtures.waiting import wait_for


def test_this_process_got_the_ports_at_start_up():
    installed = ports.current()
    assert installed.guard_deps is wiring.guard_deps and installed.tool_cache is wiring.tool_cache
    assert isinstance(installed.escalations, ReviewEscalations)
    assert installed.run_calls is wiring.run_calls


def test_a_process_without_ports_is_told_how_to_install_them(monkeypatch):
    monkeypatch.setattr(ports, "_installed", None)
    with pytest.raises(ImproperlyConfigured, match=r"agentops\.wiring\.install\(\)"):
        ports.current()


@pytest.mark.django_db(transaction=True)
def test_the_celery_worker_got_the_ports(defaults, worker):
    """On the worker the run takes its guard and tool policy from the ports, and its held tool call opens an
    escalation in the review queue through them."""
    run, _ = lifecycle.start_run(agent_actions.ensure_agent("t-approval"), {"to": "ana@example.com"})
    run = wait_for(run_in(run.pk, "waiting_human"))
    step = Step.objects.get(run=run, status="waiting_human")
    escalation = Escalation.objects.get(pk=step.escalation_id)
    assert (escalation.run_id, escalation.step_seq, escalation.reason) == (run.pk, step.seq, "sensitive_operation")


def test_a_management_command_got_the_ports(stack_env):
    code = "from agentops.runs import ports; print(type(ports.current().escalations).__name__)"
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=REPO_ROOT,
        env=stack_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "ReviewEscalations"
