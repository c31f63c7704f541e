"""OTLP export tested where users plug it in: a web process (REST API and gateway) and a Celery worker export to
a local OTLP receiver (tests/fixtures/otlp.py) over http/protobuf — Langfuse-shaped: its endpoint path and
headers — and over gRPC; the test asserts the spans a backend receives (names, attributes, parent links, the
resource, the request's path and headers) for a run, a gateway call and a REST permission request. The same
HTTP stack's log files are read back for the JSON log lines of each (item 13 of issue 17).

Each protocol has one small stack of its own (one web process, one worker with one child) on its own Celery
broker database, so no other worker of the session takes its runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from celery import Celery
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from agentops.observability.tracing import GRPC, HTTP_PROTOBUF, make_exporter
from tests.fixtures.factories import seed_prices
from tests.fixtures.otlp import OtlpReceiver, ReceivedSpan
from tests.fixtures.stack import REPO_ROOT, Proc, reseed_runtime, start_process, start_web
from tests.fixtures.waiting import wait_for, while_running

pytestmark = pytest.mark.django_db(transaction=True)

UPSTREAM_MODEL = "mock-upstream"  # no route lists it: the gateway's OPENAI_BASE_URL upstream (the mock) answers
LANGFUSE_AUTH = "Basic cGstbGYtb3RscDpzay1sZi1vdGxw"  # base64("pk-lf-otlp:sk-lf-otlp")
SERVER, CLIENT = 2, 3  # opentelemetry.proto.trace.v1.Span.SpanKind
CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACEPARENT = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


class Stack:
    def __init__(self, protocol: str, web: Proc, worker: Proc, offsets: dict[Path, int]) -> None:
        self.protocol, self.web, self.worker, self.offsets = protocol, web, worker, offsets
        self.url = web.extra["url"]

    def stop(self) -> None:
        for proc in (self.worker, self.web):  # both shut down at once, then each is waited for
            if proc.popen.poll() is None:
                proc.popen.terminate()
        self.worker.stop()
        self.web.stop()

    def log_lines(self) -> list[str]:
        """Every line the two processes wrote since they were ready."""
        lines = []
        for proc in (self.web, self.worker):
            with proc.log.open("rb") as log:
                log.seek(self.offsets[proc.log])
                lines += log.read().decode(errors="replace").splitlines()
        return lines


def start_stack(protocol: str, receiver: OtlpReceiver, stack_env: dict, logdir: Path, mock_openai, db: int) -> Stack:
    broker = stack_env["REDIS_URL"].rsplit("/", 1)[0] + f"/{db}"
    env = {
        **stack_env,
        "CELERY_BROKER_URL": broker,  # this stack's runs reach this stack's worker only
        "OPENAI_BASE_URL": mock_openai.base_url,
        "OPENAI_API_KEY": "sk-test",
        "LOG_FORMAT": "json",
        "OTEL_SERVICE_NAME": f"agentops-otlp-{protocol.replace('/', '-')}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    if protocol == HTTP_PROTOBUF:  # Langfuse's shape: a traces endpoint under /api/public/otel, Basic auth
        env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = receiver.http_url + "/api/public/otel/v1/traces"
        env["OTEL_EXPORTER_OTLP_HEADERS"] = f"Authorization={LANGFUSE_AUTH},x-langfuse-ingestion-version=4"
    else:
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.grpc_url
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = GRPC
        env["OTEL_EXPORTER_OTLP_HEADERS"] = "x-otlp-tenant=agentops-tests"
    name = f"otlp-{db}"
    worker = start_process(
        f"worker-{name}",
        [
            *(sys.executable, "-m", "celery", "-A", "agentops.celery", "worker", "--loglevel", "INFO"),
            *(
                "--concurrency",
                "1",
                "--hostname",
                f"{name}@%h",
                "-Q",
                "default",
                "--without-gossip",
                "--without-mingle",
            ),
        ],
        env,
        logdir,
    )
    try:
        web = start_web(env, logdir)  # starts while the worker does
    except BaseException:
        # A worker left behind would outlive the session and, on the next run's Redis (same port, same
        # database), take that run's tasks with its stale exporter: stop it with the web that failed.
        worker.stop()
        raise
    pinger = Celery(broker=broker, set_as_current=False)  # the current app stays the one tasks are sent with

    def answered() -> bool:
        return any(name in host for reply in pinger.control.ping(timeout=0.5) for host in reply)

    try:
        wait_for(while_running(worker.popen, answered, f"celery worker {name}", worker.log), timeout=40, interval=0.05)
    except BaseException:
        worker.stop()
        web.stop()
        raise
    finally:
        pinger.close()
    return Stack(protocol, web, worker, {proc.log: proc.log.stat().st_size for proc in (web, worker)})


@pytest.fixture(scope="module")
def http_stack(receiver, stack_env, logdir, mock_openai) -> Iterator[Stack]:
    stack = start_stack(HTTP_PROTOBUF, receiver, stack_env, logdir, mock_openai, db=11)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def grpc_stack(receiver, stack_env, logdir, mock_openai) -> Iterator[Stack]:
    stack = start_stack(GRPC, receiver, stack_env, logdir, mock_openai, db=12)
    yield stack
    stack.stop()


def exercise(stack: Stack, make_key) -> dict:
    """A permission request, a gateway call and a run on ``stack``, each sent with the caller's traceparent."""
    reseed_runtime()
    seed_prices()
    tag = "grpc" if stack.protocol == GRPC else "http"
    headers = {"traceparent": TRACEPARENT}
    actions = httpx.Client(
        base_url=stack.url + "/api/v1",
        headers={"Authorization": f"Bearer {make_key('t-agent', scopes=['actions'])}", **headers},
        timeout=30,
    )
    action = actions.post("/actions", json={"operation": "lookup_order", "session_id": f"otlp-act-{tag}"})
    assert action.status_code == 201 and action.json()["status"] == "approved", action.text

    sdk = openai.OpenAI(base_url=stack.url + "/v1", api_key=make_key("t-gw"), max_retries=0)
    answer = sdk.chat.completions.create(
        model=UPSTREAM_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        extra_headers={"X-Session-Id": f"otlp-gw-{tag}", **headers},
    )
    assert answer.choices[0].message.content == "Mock answer to: What is the capital of France?"

    runs = httpx.Client(
        base_url=stack.url + "/api/v1",
        headers={"Authorization": f"Bearer {make_key('t-steps', scopes=['runs'])}", **headers},
        timeout=30,
    )
    started = runs.post("/runs", json={"input": {"steps": 1}, "session_id": f"otlp-run-{tag}"})
    assert started.status_code == 201, started.text
    run_id = started.json()["id"]

    def finished() -> dict | None:
        body = runs.get(f"/runs/{run_id}", params={"wait": 5}).json()
        return body if body["status"] in ("succeeded", "failed") else None

    run = wait_for(finished, timeout=40, interval=0)
    assert run["status"] == "succeeded", run
    actions.close()
    runs.close()
    return {"tag": tag, "action_id": action.json()["id"], "answer": answer, "run_id": run_id}


def children(spans: list[ReceivedSpan], parent: ReceivedSpan, name: str | None = None) -> list[ReceivedSpan]:
    return [s for s in spans if s.parent_span_id == parent.span_id and (name is None or s.name == name)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_run_a_gateway_call_and_a_permission_request_reach_the_otlp_receiver(protocol, request, receiver, make_key):
    stack: Stack = request.getfixturevalue(f"{protocol}_stack")
    done = exercise(stack, make_key)
    mine = lambda span: span.transport == protocol  # noqa: E731

    # The REST permission request: a SERVER span continuing the caller's trace.
    action = receiver.wait_for(lambda s: mine(s) and s.name == "POST /api/v1/actions")
    assert (action.trace_id, action.parent_span_id, action.kind) == (CALLER_TRACE, CALLER_SPAN, SERVER)
    assert action.attributes["http.response.status_code"] == 201
    assert action.attributes["http.route"] == "/api/v1/actions" and action.attributes["url.path"] == "/api/v1/actions"

    # The gateway call: the guarded call's span, and under it the attempt's CLIENT span (GenAI conventions).
    chat = receiver.wait_for(lambda s: mine(s) and s.attributes.get("gen_ai.request.model") == UPSTREAM_MODEL)
    usage = done["answer"].usage
    assert (chat.name, chat.kind) == (f"chat {UPSTREAM_MODEL}", CLIENT)
    assert chat.attributes["gen_ai.operation.name"] == "chat" and chat.attributes["gen_ai.provider.name"]
    assert chat.attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert chat.attributes["gen_ai.usage.output_tokens"] == usage.completion_tokens
    assert chat.attributes["gen_ai.response.model"] == UPSTREAM_MODEL
    assert chat.attributes["gen_ai.conversation.id"] == f"otlp-gw-{done['tag']}"
    guarded = receiver.wait_for(lambda s: s.span_id == chat.parent_span_id)
    assert guarded.name.startswith("agentops.llm ") and guarded.trace_id == chat.trace_id
    # ... under the gateway's SERVER span, which continues the caller's traceparent.
    served = receiver.wait_for(lambda s: s.span_id == guarded.parent_span_id)
    assert (served.name, served.kind) == ("POST /v1/chat/completions", SERVER)
    assert (served.trace_id, served.parent_span_id) == (CALLER_TRACE, CALLER_SPAN)

    # The run (in the worker): invoke_agent → agentops.llm planning → chat gpt-4o, and execute_tool, in the
    # trace of the POST /api/v1/runs request that started it, which continues the caller's traceparent.
    root = receiver.wait_for(lambda s: mine(s) and s.attributes.get("agentops.run.id") == done["run_id"])
    assert root.name == "invoke_agent t-steps" and root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "t-steps"
    assert root.attributes["gen_ai.conversation.id"] == f"otlp-run-{done['tag']}"
    start = receiver.wait_for(lambda s: mine(s) and s.span_id == root.parent_span_id)
    assert (start.name, start.kind, start.attributes["http.response.status_code"]) == ("POST /api/v1/runs", SERVER, 201)
    assert (root.trace_id, start.trace_id, start.parent_span_id) == (CALLER_TRACE, CALLER_TRACE, CALLER_SPAN)
    receiver.wait_for(lambda s: s.trace_id == root.trace_id and s.name == "chat gpt-4o")
    spans = receiver.trace(root.trace_id)
    [planning] = children(spans, root, "agentops.llm planning")
    [run_chat] = children(spans, planning, "chat gpt-4o")
    assert run_chat.kind == CLIENT and run_chat.attributes["gen_ai.usage.input_tokens"] > 0
    [tool] = children(spans, root, "execute_tool t_echo")
    assert (
        tool.attributes["gen_ai.tool.name"] == "t_echo" and tool.attributes["gen_ai.operation.name"] == "execute_tool"
    )

    # Every span came from the configured resource, over the configured path and headers.
    service = f"agentops-otlp-{stack.protocol.replace('/', '-')}"
    for span in (action, chat, guarded, served, root, start, run_chat, tool):
        assert span.resource["service.name"] == service
        if protocol == "http":
            assert span.path == "/api/public/otel/v1/traces"
            assert span.headers["authorization"] == LANGFUSE_AUTH
            assert span.headers["x-langfuse-ingestion-version"] == "4"
            assert span.headers["content-type"] == "application/x-protobuf"
        else:
            assert span.headers["x-otlp-tenant"] == "agentops-tests"


def test_json_log_lines_of_a_run_a_gateway_call_and_a_rest_call_carry_session_run_trace_and_span(http_stack, make_key):
    done = exercise(http_stack, make_key)

    def lines() -> list[dict]:
        raw = http_stack.log_lines()
        parsed = [json.loads(line) for line in raw if line.strip()]  # one JSON object per line, nothing else
        assert all(isinstance(entry, dict) for entry in parsed)
        return parsed

    def traced(entry: dict) -> bool:
        return len(entry.get("trace_id", "")) == 32 and len(entry.get("span_id", "")) == 16

    # The REST call: the request's line, with the session the body named and the caller's trace.
    rest = wait_for(
        lambda: next(
            (e for e in lines() if e["event"] == "http.request" and e.get("session_id") == f"otlp-act-{done['tag']}"),
            None,
        )
    )
    assert rest["path"] == "/api/v1/actions" and rest["status"] == 201 and traced(rest)
    assert rest["trace_id"] == CALLER_TRACE and rest["request_id"]

    # The gateway call: the guard's line, with the session from X-Session-Id.
    gateway = wait_for(
        lambda: next(
            (e for e in lines() if e["event"] == "llm.call" and e.get("session_id") == f"otlp-gw-{done['tag']}"),
            None,
        )
    )
    assert gateway["model"] == UPSTREAM_MODEL and gateway["outcome"] == "success" and traced(gateway)

    # The run (the worker's lines): the run id, its session, and the run's trace on each.
    run_lines = wait_for(lambda: [e for e in lines() if e.get("run_id") == done["run_id"] and e["event"] == "llm.call"])
    for entry in run_lines:
        assert entry["session_id"] == f"otlp-run-{done['tag']}" and traced(entry)


@pytest.mark.parametrize(
    ("endpoint_variable", "endpoint", "headers", "path", "expected"),
    [
        (  # Langfuse (README, Monitoring): the base endpoint; the exporter appends /v1/traces
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "/api/public/otel",
            f"Authorization={LANGFUSE_AUTH.replace(' ', '%20')},x-langfuse-ingestion-version=4",  # as the README
            "/api/public/otel/v1/traces",
            {"authorization": LANGFUSE_AUTH, "x-langfuse-ingestion-version": "4"},
        ),
        (  # LangSmith: the traces endpoint itself, its API key and the project
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "/otel/v1/traces",
            "x-api-key=lsv2_pt_otlp,Langsmith-Project=agentops",
            "/otel/v1/traces",
            {"x-api-key": "lsv2_pt_otlp", "langsmith-project": "agentops"},
        ),
    ],
    ids=["langfuse", "langsmith"],
)
def test_the_exporter_sends_to_the_configured_endpoint_with_its_headers(
    receiver, monkeypatch, endpoint_variable, endpoint, headers, path, expected
):
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    monkeypatch.setenv(endpoint_variable, receiver.http_url + endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", headers)
    exporter = make_exporter(HTTP_PROTOBUF)
    provider = TracerProvider(resource=Resource.create({"service.name": "agentops-headers"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("exported", attributes={"case": endpoint}):
        pass
    provider.shutdown()
    span = receiver.wait_for(lambda s: s.name == "exported" and s.attributes.get("case") == endpoint)
    assert span.path == path and span.resource["service.name"] == "agentops-headers"
    assert {name: span.headers.get(name) for name in expected} == expected


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"])
def test_an_unknown_otlp_protocol_stops_the_start(variable, stack_env):
    env = {**stack_env, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", variable: "http/json"}
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert f"ImproperlyConfigured: {variable}='http/json' is not supported; use one of http/protobuf, grpc" in (
        started.stderr
    )
