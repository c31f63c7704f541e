"""A run's spans (OpenTelemetry GenAI conventions) captured in-process with the SDK's in-memory exporter:
invoke_agent {agent} → agentops.llm {operation} → chat {model}, and execute_tool {name}; a run suspended for a
human and resumed is one trace, continuing the trace of the caller that started it."""

import pytest
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.trace import SpanKind

from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.execution import execute_run
from agentops.runs.models import Run, Step

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"


def named(exporter, prefix: str) -> list:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


@pytest.mark.django_db(transaction=True)
def test_a_run_emits_nested_spans_with_genai_attributes(defaults, spans):
    run, _ = lifecycle.start_run(agent_actions.ensure_agent("t-steps"), {"steps": 1}, session_id="sess-9")
    assert execute_run(run.pk) == "succeeded"
    (root,) = named(spans, "invoke_agent ")
    (guard,) = named(spans, "agentops.llm ")
    (chat,) = named(spans, "chat ")
    tools = named(spans, "execute_tool ")
    assert root.name == "invoke_agent t-steps" and root.kind is SpanKind.INTERNAL
    a = root.attributes
    assert (a["gen_ai.operation.name"], a["gen_ai.agent.name"], a["gen_ai.conversation.id"]) == (
        "invoke_agent",
        "t-steps",
        "sess-9",
    )
    assert a["agentops.run.id"] == run.pk and a["agentops.run.outcome"] == "succeeded" and a["gen_ai.provider.name"]
    assert guard.name == "agentops.llm planning" and guard.parent.span_id == root.context.span_id
    assert guard.attributes["agentops.step"] == 1
    assert chat.parent.span_id == guard.context.span_id and chat.kind is SpanKind.CLIENT
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o" and chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0 and chat.attributes["gen_ai.conversation.id"] == "sess-9"
    assert [t.name for t in tools] == ["execute_tool t_echo"]
    (tool,) = tools
    assert tool.parent.span_id == root.context.span_id and tool.kind is SpanKind.INTERNAL
    assert (
        tool.attributes["gen_ai.operation.name"] == "execute_tool" and tool.attributes["gen_ai.tool.name"] == "t_echo"
    )
    assert tool.attributes["gen_ai.tool.call.id"] == f"run:{run.pk}:step:2"
    assert Run.objects.get(pk=run.pk).trace_id == format(root.context.trace_id, "032x")


@pytest.mark.django_db(transaction=True)
def test_a_run_suspended_for_a_human_and_resumed_is_one_trace_continuing_its_callers(defaults, spans, monkeypatch):
    # The decision's enqueue would hand the resumed execution to the session's worker (another process):
    # here this process executes it, so its spans are captured.
    monkeypatch.setattr(lifecycle, "enqueue_execution", lambda run_pk: None)
    token = otel_context.attach(propagate.extract({"traceparent": TRACEPARENT}))  # what the API middleware does
    try:
        run, _ = lifecycle.start_run(agent_actions.ensure_agent("t-approval"), {"to": "ana@example.com"})
    finally:
        otel_context.detach(token)
    assert Run.objects.get(pk=run.pk).trace_context["traceparent"] == TRACEPARENT

    assert execute_run(run.pk) == "waiting_human"
    (first,) = named(spans, "invoke_agent ")
    assert format(first.context.trace_id, "032x") == CALLER_TRACE
    assert format(first.parent.span_id, "016x") == "00f067aa0ba902b7" and first.parent.is_remote
    assert first.attributes["agentops.run.outcome"] == "waiting_human"
    stored = Run.objects.get(pk=run.pk)
    assert stored.trace_id == CALLER_TRACE
    assert stored.trace_context["traceparent"] == f"00-{CALLER_TRACE}-{first.context.span_id:016x}-01"

    waiting = Step.objects.get(run=run, status="waiting_human")
    lifecycle.decide_step(run.pk, waiting.seq, {"decision": "approved"})
    spans.clear()
    assert execute_run(run.pk) == "succeeded"
    (second,) = named(spans, "invoke_agent ")
    assert second.context.trace_id == first.context.trace_id  # one trace across both executions
    assert second.parent.span_id == first.context.span_id  # a child of the first execution's span
    assert second.attributes["agentops.run.execution"] == 2
    tools = named(spans, "execute_tool ")
    assert [t.name for t in tools] == ["execute_tool send_note", "execute_tool t_echo"]
    assert all(t.context.trace_id == first.context.trace_id for t in tools)
    assert Run.objects.get(pk=run.pk).trace_id == CALLER_TRACE  # what the run page shows
