"""OpenTelemetry: one SDK TracerProvider per process, so spans (agent.run → agent.step → gen_ai.chat)
always carry real trace ids (stored on runs and stamped on log lines). Spans are exported over OTLP
when the standard OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables are set
(Jaeger, Tempo, Langfuse and LangSmith all accept OTLP)."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

_provider: TracerProvider | None = None


def configure_tracing(*, export: bool) -> TracerProvider:
    """Idempotent; settings.py calls it once per process."""
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "agentops")})
    _provider = TracerProvider(resource=resource)
    if export:
        # Only a process that exports pays for the exporter's import (protobuf, requests): most never do.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(_provider)
    return _provider


def tracer_provider() -> TracerProvider | None:
    return _provider
