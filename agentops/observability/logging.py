"""JSON logs through structlog for web and worker processes.

Every line carries timestamp, level, event and whatever is bound in contextvars (request_id, run_id,
session_id, trace_id, span_id, ...). Standard-library loggers (Django, Celery, uvicorn) are rendered by the same
processor chain so a process writes one format only.
"""

from __future__ import annotations

import logging
import logging.config
import time
import uuid

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from agentops.observability import metrics

tracer = trace.get_tracer("agentops.http")
# Probes and scrapes get no span of their own: they would bury the requests that matter.
UNTRACED_PREFIXES = ("/healthz", "/readyz", "/metrics", "/static/")

_configured = False


def _add_trace_context(logger, method_name, event_dict):
    """Stamp the current OpenTelemetry trace id and span id on the line when a span is active (a line that
    names them itself, e.g. one written after its span ended, keeps its own)."""
    if "trace_id" not in event_dict or "span_id" not in event_dict:
        try:
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
                event_dict.setdefault("span_id", format(context.span_id, "016x"))
        except Exception:  # noqa: S110  (logging must never fail because tracing is unavailable)
            pass
    return event_dict


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    """Idempotent: settings.py calls it once per process."""
    global _configured
    if _configured:
        return
    _configured = True
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_context,
    ]
    renderer = structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "structured": {
                    "()": structlog.stdlib.ProcessorFormatter,
                    "processors": [
                        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.format_exc_info,
                        renderer,
                    ],
                    "foreign_pre_chain": [*shared, structlog.stdlib.ExtraAdder()],
                }
            },
            "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "structured"}},
            "root": {"handlers": ["stdout"], "level": level},
            "loggers": {
                # Our middleware writes the one line per request; these would duplicate it.
                "django.request": {"level": "ERROR"},
                "django.server": {"level": "WARNING"},
                # uvicorn installs its own handlers before the app loads; route it through ours.
                "uvicorn": {"handlers": [], "propagate": True},
                "uvicorn.error": {"handlers": [], "propagate": True},
                "uvicorn.access": {"handlers": [], "propagate": True, "level": "WARNING"},
                "httpx": {"level": "WARNING"},
                "httpcore": {"level": "WARNING"},
                "httpx2": {"level": "WARNING"},
                "httpcore2": {"level": "WARNING"},
                "openai": {"level": "WARNING"},
            },
        }
    )


def new_request_id(incoming: str | None) -> str:
    """Honour a sane incoming X-Request-ID (from a proxy) or make one."""
    if incoming and len(incoming) <= 64 and incoming.replace("-", "").isalnum():
        return incoming
    return uuid.uuid4().hex


API_PREFIX = "/api/v1/"
API_DOCS = ("/api/v1/docs", "/api/v1/openapi.json")


def is_api_call(path: str) -> bool:
    """An agent's REST call (counted as session_type ``api``): under /api/v1/, its docs and schema excepted."""
    return path.startswith(API_PREFIX) and not path.startswith(API_DOCS)


class RequestLogMiddleware:
    """Binds a request id for every log line of the request, runs the request in a SERVER span (continuing a
    W3C ``traceparent`` the caller sent) and writes one line when it ends, with the span's trace and span ids.

    Sync and async capable so async views (long-polls, the gateway) are not forced onto a thread.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        self.get_response = get_response
        self._is_async = iscoroutinefunction(get_response)
        if self._is_async:
            markcoroutinefunction(self)
        self.log = structlog.get_logger("agentops.http")

    def __call__(self, request):
        if self._is_async:
            return self.__acall__(request)
        started, span, token = self._start(request)
        try:
            response = self.get_response(request)
            self._finish(request, response, started, span)
        finally:
            self._end(span, token)
        return response

    async def __acall__(self, request):
        started, span, token = self._start(request)
        try:
            response = await self.get_response(request)
            self._finish(request, response, started, span)
        finally:
            self._end(span, token)
        return response

    def _start(self, request):
        structlog.contextvars.clear_contextvars()
        request.request_id = new_request_id(request.headers.get("X-Request-ID"))
        structlog.contextvars.bind_contextvars(request_id=request.request_id)
        span = token = None
        # The request's SERVER span, a child of the caller's when it sent a W3C traceparent (read with the
        # propagator); a span already current (a caller in this process, a test) is the one instead.
        if not request.path.startswith(UNTRACED_PREFIXES) and not trace.get_current_span().get_span_context().is_valid:
            span = tracer.start_span(
                request.method,  # "{method} {route}" once the route is known (never the path: ids in names)
                context=propagate.extract(request.headers),
                kind=trace.SpanKind.SERVER,
                attributes={
                    "http.request.method": request.method,
                    "url.path": request.path,
                    "url.scheme": request.scheme,
                },
            )
            token = otel_context.attach(trace.set_span_in_context(span))
        return time.perf_counter(), span, token

    @staticmethod
    def _end(span, token) -> None:
        if span is not None:
            otel_context.detach(token)
            span.end()

    def _finish(self, request, response, started: float, span) -> None:
        elapsed = time.perf_counter() - started
        response["X-Request-ID"] = request.request_id
        metrics.HTTP_REQUESTS.labels(method=request.method, status=f"{response.status_code // 100}xx").inc()
        metrics.HTTP_SECONDS.labels(method=request.method).observe(elapsed)
        if span is not None and span.is_recording():
            route = getattr(getattr(request, "resolver_match", None), "route", None)
            if route:  # the route's pattern, not the path with its ids: one span name per endpoint
                route = "/" + route.lstrip("^").rstrip("$")
                span.update_name(f"{request.method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", response.status_code)
            if response.status_code >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR))
                span.set_attribute("error.type", str(response.status_code))
        if is_api_call(request.path):
            success = "true" if response.status_code < 400 else "false"
            metrics.REQUESTS.labels(session_type="api", success=success).inc()
        # Only a user some view already loaded: touching the lazy request.user here would query the
        # database, which async requests must not do from this coroutine.
        user = getattr(request, "_cached_user", None)
        self.log.info(
            "http.request",
            method=request.method,
            path=request.path,
            status=response.status_code,
            duration_ms=round(elapsed * 1000, 2),
            user=user.get_username() if user is not None and user.is_authenticated else None,
        )
