"""The OTLP protocol per the OTel spec's variables, and the trace ids the log processor stamps."""

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agentops.observability.logging import _add_trace_context
from agentops.observability.tracing import GRPC, HTTP_PROTOBUF, otlp_enabled, otlp_protocol


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, HTTP_PROTOBUF),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, GRPC),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, HTTP_PROTOBUF),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": " grpc "}, GRPC),
        ({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, GRPC),
    ],
)
def test_the_traces_protocol_follows_the_spec_variables(environ, expected):
    assert otlp_protocol(environ) == expected


@pytest.mark.parametrize("value", ["http/json", "http", "GRPC", "udp"])
def test_an_unsupported_protocol_is_refused(value):
    with pytest.raises(ValueError, match=f"OTEL_EXPORTER_OTLP_PROTOCOL={value!r} is not supported"):
        otlp_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": value})


def test_export_is_on_when_either_endpoint_is_set():
    assert not otlp_enabled({})
    assert otlp_enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert otlp_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})


def test_a_log_line_gets_the_current_trace_and_span_ids_and_keeps_its_own():
    assert _add_trace_context(None, "info", {"event": "x"}) == {"event": "x"}  # no span: nothing invented
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        context = span.get_span_context()
        line = _add_trace_context(None, "info", {"event": "x"})
        assert line["trace_id"] == format(context.trace_id, "032x") and len(line["trace_id"]) == 32
        assert line["span_id"] == format(context.span_id, "016x") and len(line["span_id"]) == 16
        named = _add_trace_context(None, "info", {"event": "x", "trace_id": "a" * 32, "span_id": "b" * 16})
        assert (named["trace_id"], named["span_id"]) == ("a" * 32, "b" * 16)
