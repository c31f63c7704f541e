"""OpenTelemetry: one SDK TracerProvider per process, so spans (a run, its steps, each LLM attempt) always
carry real trace ids (stored on runs and stamped on log lines). Spans are exported over OTLP when the
standard OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT variables are set, over
``http/protobuf`` (the default) or ``grpc`` as OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL
say (Jaeger, Tempo, Langfuse and LangSmith all accept OTLP; the README's Monitoring section has their
endpoints and headers). The exporters read the other standard variables themselves (headers, timeout,
compression, certificates); OTEL_BSP_* tune the batch processor.

The exporter is operator configuration, not agent input: it is not routed through the outbound address guard
(agentops/lib/netguard.py), so a collector on loopback or a private network just works.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

HTTP_PROTOBUF = "http/protobuf"
GRPC = "grpc"
PROTOCOLS = (HTTP_PROTOBUF, GRPC)

_provider: TracerProvider | None = None


def otlp_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ""))


def otlp_protocol(environ: Mapping[str, str] = os.environ) -> str:
    """The traces' OTLP protocol per the OTel spec: OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else
    OTEL_EXPORTER_OTLP_PROTOCOL, else ``http/protobuf``. Raises ValueError for a value this process cannot
    export with (``http/json`` included: the Python SDK has no JSON exporter), so settings.py fails at start-up
    instead of silently exporting nothing or with another protocol."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(name, "").strip()
        if value:
            if value not in PROTOCOLS:
                raise ValueError(f"{name}={value!r} is not supported; use one of {', '.join(PROTOCOLS)}")
            return value
    return HTTP_PROTOBUF


def make_exporter(protocol: str) -> SpanExporter:
    """The OTLP span exporter for ``protocol``; it reads its endpoint, headers, timeout and TLS settings from
    the standard environment variables. Imported here: only a process that exports pays for the exporter's
    import (protobuf, requests or grpc), and most never do."""
    if protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    return OTLPSpanExporter()


class PerProcessExporter(SpanExporter):
    """Builds the real exporter on first export, in the process that exports, and forgets it in a forked
    child. A Celery prefork worker configures tracing in its parent and forks the children that run tasks: a
    gRPC channel (or an HTTP connection pool) made before the fork must not be used on both sides of it. The
    batch processor restarts its own thread after a fork (the SDK registers that); this does the same for
    the connection."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self._exporter: SpanExporter | None = None
        self._lock = threading.Lock()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._exporter = None
        self._lock = threading.Lock()

    def _real(self) -> SpanExporter:
        with self._lock:
            if self._exporter is None:
                self._exporter = make_exporter(self.protocol)
            return self._exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._real().export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        exporter = self._exporter
        return exporter.force_flush(timeout_millis) if exporter is not None else True

    def shutdown(self) -> None:
        exporter = self._exporter
        if exporter is not None:
            exporter.shutdown()


def configure_tracing(*, export: bool, protocol: str = HTTP_PROTOBUF) -> TracerProvider:
    """Idempotent; settings.py calls it once per process."""
    global _provider
    if _provider is not None:
        return _provider
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "agentops")})
    _provider = TracerProvider(resource=resource)
    if export:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415  (only when exporting)

        _provider.add_span_processor(BatchSpanProcessor(PerProcessExporter(protocol)))
    trace.set_tracer_provider(_provider)
    return _provider


def tracer_provider() -> TracerProvider | None:
    return _provider
