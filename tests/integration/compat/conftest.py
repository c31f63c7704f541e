"""Fixtures for the compatibility tests: real clients, unmodified, against the real gateway (uvicorn with the
fault-injecting mock as the upstream, PostgreSQL, Redis) — the gateway tests' fixtures (``gateway``,
``client``, ``async_client``), plus:

- ``endpoint(path)``: skips the test when the gateway does not serve ``path`` yet (a probe: an unknown URL
  answers 404 ``unknown_url``), so tests for endpoints still being built run as soon as they exist;
- ``agents_python``: the Python of .run/venv-agents, a venv holding the openai-agents SDK
  (requirements-agents.txt), which cannot be installed beside requirements.txt (its websockets cap);
- ``assert_guarded(headers)`` and ``ledger_rows(agent, count)``: what every test checks besides content.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest

from budgets.models import UsageRecord
from tests.fixtures import agents_venv
from tests.fixtures.stack import Proc, gateway_process
from tests.fixtures.waiting import wait_for
from tests.integration.gateway import conftest as gateway_fixtures

# The gateway tests' fixtures, shared here (a conftest's fixtures reach only its own folder).
gateway = gateway_fixtures.gateway


@pytest.fixture(scope="session")
def gateway_web(stack_env, logdir, mock_openai) -> Iterator[Proc]:
    """This folder's own gateway process, started once (tests/fixtures/stack.py, ``gateway_process``): not the
    gateway folder's, whose in-process response cache has answered the same inputs."""
    yield from gateway_process(stack_env, logdir, mock_openai)


client, async_client = gateway_fixtures.client, gateway_fixtures.async_client

AGENTS_CLIENT = Path(__file__).with_name("agents_client.py")


def assert_guarded(headers: Mapping[str, str]) -> None:
    """The guard's headers: a request id and the overhead it added (a number of milliseconds >= 0)."""
    assert headers.get("x-agentops-request-id"), dict(headers)
    assert float(headers["x-agentops-overhead-ms"]) >= 0
    assert headers["x-agentops-cache"] in {"hit", "miss", "bypass"}


def ledger_rows(agent: str, count: int) -> list[UsageRecord]:
    """The agent's gateway ledger rows, oldest first, once there are ``count`` (settling follows the answer);
    each is priced (the seed's "*" price covers the mock's models) unless it was answered from the cache."""

    def rows() -> list[UsageRecord] | None:
        found = list(UsageRecord.objects.filter(agent=agent).order_by("id"))
        return found if len(found) >= count else None

    rows.describe = lambda: f"{count} ledger rows of {agent}: {UsageRecord.objects.filter(agent=agent).count()}"
    found = wait_for(rows)
    assert len(found) == count, [(r.model, r.input_tokens, r.output_tokens) for r in found]
    for row in found:
        assert row.source == "gateway", row.__dict__
        assert row.cached or (row.cost_usd > 0 and row.price_id is not None), row.__dict__  # a cache hit is free
    return found


@pytest.fixture
def endpoint(gateway, make_key) -> Callable[[str], None]:
    """``endpoint("/responses")``: skip this test unless the gateway serves that path (POST ``{}`` answers
    anything but 404 ``unknown_url``)."""

    def probe(path: str) -> None:
        answer = httpx.post(f"{gateway}{path}", json={}, headers={"Authorization": f"Bearer {make_key()}"}, timeout=10)
        code = answer.json().get("error", {}).get("code") if answer.status_code == 404 else None
        if code == "unknown_url":
            pytest.skip(f"the gateway does not serve POST /v1{path} yet (404 unknown_url)")

    return probe


@pytest.fixture(scope="session")
def agents_python() -> str:
    """The Python of .run/venv-agents with requirements-agents.txt installed (built once, in the background
    from collection on; rebuilt when the file changes): tests/fixtures/agents_venv.py."""
    return agents_venv.agents_python()


@pytest.fixture
def agent_command(agents_python, gateway) -> Callable[..., list[str]]:
    """``agent_command(scenario, api_key, input, model)``: the command line running agents_client.py."""

    def command(scenario: str, api_key: str, text: str, model: str) -> list[str]:
        spec = {"scenario": scenario, "base_url": gateway, "api_key": api_key, "input": text, "model": model}
        return [agents_python, str(AGENTS_CLIENT), json.dumps(spec)]

    return command


AGENT_ENV = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}  # the SDK reads OPENAI_*


def agent_result(done: subprocess.CompletedProcess | tuple[str, str], returncode: int | None = None) -> dict:
    """agents_client.py's JSON result from its finished process (or its ``(stdout, stderr)``)."""
    stdout, stderr = (done.stdout, done.stderr) if isinstance(done, subprocess.CompletedProcess) else done
    code = done.returncode if isinstance(done, subprocess.CompletedProcess) else returncode
    assert code == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def run_agent(agent_command) -> Callable[..., dict]:
    """``run_agent(scenario, api_key, input, model)``: agents_client.py's JSON result (see its docstring)."""

    def run(scenario: str, api_key: str, text: str, model: str, timeout: float = 90) -> dict:
        command = agent_command(scenario, api_key, text, model)
        return agent_result(subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=AGENT_ENV))

    return run
