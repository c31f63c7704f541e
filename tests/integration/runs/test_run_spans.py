"""Spans agent.run → agent.step → gen_ai.chat, captured in-process with the SDK's in-memory exporter."""

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentops.observability.tracing import tracer_provider
from agentops.runs.actions import agents as agent_actions
from agentops.runs.actions import lifecycle
from agentops.runs.execution import execute_run
from agentops.runs.models import Run


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    tracer_provider().add_span_processor(processor)
    yield exporter
    processor.shutdown()


@pytest.mark.django_db(transaction=True)
def test_a_run_emits_nested_spans_with_genai_attributes(defaults, spans):
    run, _ = lifecycle.start_run(agent_actions.ensure_agent("t-steps"), {"steps": 1})
    assert execute_run(run.pk) == "succeeded"
    finished = {span.name: span for span in spans.get_finished_spans()}
    root, chat = finished["agent.run"], finished["gen_ai.chat"]
    steps = [s for s in spans.get_finished_spans() if s.name == "agent.step"]
    assert root.attributes["agent.name"] == "t-steps" and root.attributes["agent.run.outcome"] == "succeeded"
    assert all(s.parent.span_id == root.context.span_id for s in steps)
    llm_step = next(s for s in steps if s.attributes["agent.step.kind"] == "llm")
    assert chat.parent.span_id == llm_step.context.span_id
    assert chat.attributes["gen_ai.request.model"] == "gpt-4o"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.operation.name"]
    assert Run.objects.get(pk=run.pk).trace_id == format(root.context.trace_id, "032x")
