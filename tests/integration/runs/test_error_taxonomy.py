"""The error taxonomy in use on real workers: a tool's OSError(ENOSPC) inside a run is a resource error on the
timeline, in the metrics and on the log lines, retried by the ResourceExhausted policy; an escalation raised
because the agent kept failing names the failure's class on the approval screen."""

from __future__ import annotations

import json

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.models import Run, Step, ToolEffect
from agentops.runs.presenters import error_view
from review.models import Escalation
from tests.fixtures.factories import run_in
from tests.fixtures.people import ALICE, ROOT, client_for
from tests.fixtures.waiting import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def start(agent_name: str, data: dict) -> Run:
    run, _ = lifecycle.start_run(agent_actions.ensure_agent(agent_name), data)
    return run


def sample(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample of the scrape (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


def scrape(web) -> str:
    return httpx.get(web.extra["url"] + "/metrics", timeout=10).text


def log_lines(proc, event: str, run_id: int, since: int = 0) -> list[dict]:
    """The worker's JSON log lines of one event for one run, written after byte offset ``since`` (the log
    file outlives test sessions, and run ids start again in each session's database)."""
    found = []
    with proc.log.open("rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    for line in text.splitlines():
        if event not in line or not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event and entry.get("run_id") == run_id:
            found.append(entry)
    return found


def test_a_tool_out_of_disk_space_is_a_resource_error_on_the_timeline_in_metrics_and_logs(defaults, worker, web):
    labels = {"error_class": "ResourceExhausted", "category": "resource"}
    before, log_start = scrape(web), worker.log.stat().st_size
    run = wait_for(run_in(start("t-disk-full", {}).pk, "failed"))

    # the run and its failed step are classified: ResourceExhausted, a system failure of category resource
    assert run.error_class == "ResourceExhausted" and "No space left on device" in run.error
    echo, disk = Step.objects.filter(run=run).order_by("seq")
    assert (echo.status, disk.status, disk.error_class) == ("completed", "failed", "ResourceExhausted")
    # the seeded ResourceExhausted policy: 2 quick retries, so the tool really ran 3 times (same idempotency key)
    assert disk.attempts == 3
    assert ToolEffect.objects.filter(idempotency_key__startswith=f"run:{run.pk}:step:2:try:").count() == 3

    page = client_for(ROOT).get(f"/runs/{run.pk}/").content.decode()
    assert 'data-category="resource"' in page and "system failure · resource" in page
    view = error_view(disk.error_class)
    assert (view.category, view.kind) == ("resource", "system") and "disk space" in view.sentence

    tool_errors = {"tool": "t_disk_full", **labels}

    def counted() -> str | None:  # the worker's samples reach the scrape through the multiprocess files
        text = scrape(web)
        grown = sample(text, "agentops_tool_errors_total", **tool_errors) - sample(
            before, "agentops_tool_errors_total", **tool_errors
        )
        return text if grown >= 3 else None

    after = wait_for(counted, timeout=10)
    tool_delta = sample(after, "agentops_tool_errors_total", **tool_errors) - sample(
        before, "agentops_tool_errors_total", **tool_errors
    )
    assert tool_delta == 3
    assert sample(after, "agentops_retries_total", **labels) - sample(before, "agentops_retries_total", **labels) == 2

    [step_failed] = log_lines(worker, "run.step_failed", run.pk, since=log_start)
    assert (step_failed["error_class"], step_failed["error_category"], step_failed["reason"]) == (
        "ResourceExhausted",
        "resource",
        "enospc",
    )
    [run_failed] = log_lines(worker, "run.failed", run.pk, since=log_start)
    assert (run_failed["error_class"], run_failed["error_category"]) == ("ResourceExhausted", "resource")


def test_an_escalation_raised_after_failures_names_the_error_class_on_the_approval_screen(defaults, worker):
    run = wait_for(run_in(start("t-retries-escalate", {}).pk, "waiting_human"))
    escalation = Escalation.objects.get(run=run)
    assert escalation.reason == "max_retries_exceeded"
    error = escalation.context["error"]
    assert (error["class"], error["category"], error["kind"], error["reason"]) == (
        "ResourceExhausted",
        "resource",
        "system",
        "enospc",
    )
    assert "last error ResourceExhausted (system: resource)" in escalation.rule

    page = client_for(ALICE).get(f"/review/{escalation.pk}/").content.decode()
    assert 'data-error-class="ResourceExhausted"' in page
    assert "The last failure was ResourceExhausted — a system failure (resource)" in page
    assert "A system failure usually passes" in page


def test_a_rejected_answer_reads_as_a_business_failure_of_category_logic():
    view = error_view("RejectedAnswer", "refusal")
    assert (view.category, view.kind, view.kind_label, view.reason) == (
        "logic",
        "business",
        "business failure",
        "refusal",
    )
    assert view.sentence.startswith("RejectedAnswer — a business failure (logic): the work itself failed")
    assert error_view("ZeroDivisionError").category == ""  # a name from before the taxonomy is shown as it is
    assert error_view("") is None
