"""Property-based fuzzing of /api/v1 with schemathesis, against the live server's OpenAPI document.

Every operation of /api/v1/openapi.json gets generated requests with a valid (admin) key: schema-valid ones
(positive) and schema-violating ones (negative). Every response must be a non-5xx whose status code,
content type and body the document declares (not_a_server_error, status_code_conformance,
content_type_conformance, response_schema_conformance). Then a stateful pass follows the document's links
between operations where there are any. Failures are collected across operations and reported together,
with the case counts (also written to test-results/schemathesis.json).

Budget: at least MIN_CASES cases in all and about a minute of wall time on two cores.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from budgets.models import Budget
from tests.fixtures.factories import make_budget, seed_prices
from tests.fixtures.people import AGENT_A
from tests.fixtures.stack import REPO_ROOT, reseed_runtime, start_web

pytestmark = pytest.mark.django_db(transaction=True)

AGENT = AGENT_A.name  # a registered agent function (tests.fixtures.test_agents), so POST /runs can succeed
MIN_CASES = 1000
BUDGET_SECONDS = 300.0  # a runaway guard only: every operation gets its examples (about 30 s on 2 cores)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_web(stack_env, logdir):
    """A server of its own: no practical rate limit (the fuzzer is one fast key) and ?wait= capped at 1 s."""
    proc = start_web(
        {
            **stack_env,
            "API_RATE_BURST": "1000000",
            "API_RATE_PER_SECOND": "1000000",
            "API_MAX_WAIT_SECONDS": "1",
            "LOG_LEVEL": "WARNING",
        },
        logdir,
    )
    yield proc
    proc.stop()


def _seed() -> str:
    reseed_runtime()
    Budget.objects.all().delete()  # only this test's budgets apply
    seed_prices()  # the seed's, unless a flush removed them
    make_budget("fuzz-agent", scope="agent", scope_key=AGENT, limit_tokens=10**12)
    return AGENT_A.key(["admin"], name="schemathesis")


def _per_operation(count: int) -> tuple[int, int]:
    """Positive and negative examples per operation so that the total is at least MIN_CASES."""
    each = max(30, -(-MIN_CASES // max(count, 1)) + 5)
    negative = max(10, each // 3)
    return each - negative, negative


def test_schemathesis_fuzz(fuzz_web, redis_client):
    url = fuzz_web.extra["url"]
    key = _seed()
    headers = {"Authorization": f"Bearer {key}"}
    schema = schemathesis.openapi.from_url(url + "/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the API has no operations"
    positive, negative = _per_operation(len(operations))
    counts: dict[str, dict[str, int]] = {}
    statuses: dict[str, dict[str, int]] = {}
    failures: dict[str, list[str]] = {}
    started = time.monotonic()

    for operation in operations:
        for mode, examples in ((GenerationMode.POSITIVE, positive), (GenerationMode.NEGATIVE, negative)):
            if time.monotonic() - started > BUDGET_SECONDS:
                break
            _fuzz(operation, mode, examples, url, headers, counts, statuses, failures)

    total = sum(sum(t.values()) for t in counts.values())
    elapsed = time.monotonic() - started
    stateful = _stateful(schema, url, headers, failures)
    report = {
        "total_cases": total,
        "stateful_steps": stateful,
        "seconds": round(elapsed, 1),
        "per_operation": counts,
        "statuses": statuses,
        "failures": failures,
    }
    out = REPO_ROOT / "test-results" / "schemathesis.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nschemathesis: {total} cases over {len(counts)} operations in {elapsed:.1f} s; stateful {stateful}")
    for label, tally in counts.items():
        print(f"  {label:<50} {tally}  statuses {statuses.get(label)}")
    _purge_queued_runs()
    assert not failures, "\n\n".join(f"{label}:\n" + "\n".join(found) for label, found in failures.items())
    assert total >= MIN_CASES, report
    assert httpx.get(url + "/healthz").status_code == 200


def _fuzz(operation, mode, examples: int, url: str, headers: dict, counts: dict, statuses: dict, failures: dict):
    """`examples` generated cases of one operation in one mode; failures recorded, not raised."""
    label = operation.label
    tally = counts.setdefault(label, {})
    seen = statuses.setdefault(label, {})

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case):
        tally[mode.value] = tally.get(mode.value, 0) + 1
        try:
            response = case.call(base_url=url, headers=headers, timeout=15)
            status = f"{mode.value[:3]}:{response.status_code}"
            seen[status] = seen.get(status, 0) + 1
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup
            found = failures.setdefault(label, [])
            if len(found) < 3:
                found.append(f"[{mode.value}] {str(exc)[:1500]}\n    reproduce: {case.as_curl_command()}")

    fuzz()


def _stateful(schema, url: str, headers: dict, failures: dict) -> int:
    """Sequences of calls along the document's links (if it declares any), with the same checks."""
    try:
        machine = schema.as_state_machine()
    except Exception:  # no links: nothing to chain
        return 0
    if not getattr(machine, "bundles", None):
        return 0
    steps = {"n": 0}

    class Machine(machine):
        def get_call_kwargs(self, case):
            return {"base_url": url, "headers": headers, "timeout": 15}

        def validate_response(self, response, case, **kwargs):
            steps["n"] += 1
            case.validate_response(response, checks=CHECKS)

    try:
        Machine.run(
            settings=settings(
                max_examples=25,
                stateful_step_count=6,
                deadline=None,
                database=None,
                derandomize=True,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
        )
    except FlakyStrategyDefinition:
        # Hypothesis stops when its own draws came out differently on a path it had walked before: against a
        # live database they do (an id it guessed exists by the next run, a used idempotency key answers 200
        # instead of 201), and which path meets that first shifts whenever an operation is added. Not an API
        # failure — a failed check or a 5xx is raised as another error below — so the steps taken count.
        if not steps["n"]:
            failures.setdefault("stateful", []).append("the stateful pass stopped before its first step")
    except (Exception, BaseExceptionGroup) as exc:
        failures.setdefault("stateful", []).append(str(exc)[:3000])
    return steps["n"]


def _purge_queued_runs() -> None:
    """Runs the fuzzer created are queued for Celery; drop them so a later test's worker does not chew on them."""
    try:
        from agentops.celery import app

        app.control.purge()
    except Exception:
        pass


EXTREMES = (2**63, -(2**63) - 1, 10**30, -1, 0, 2**31)


def _integer_parameters(document: dict) -> list[tuple[str, str, str, str]]:
    """(method, path, location, name) of every integer path or query parameter in the document."""
    found = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            for param in operation.get("parameters", []):
                schema = param.get("schema", {})
                kinds = {schema.get("type")} | {option.get("type") for option in schema.get("anyOf", [])}
                if "integer" in kinds and param["in"] in {"path", "query"}:
                    found.append((method.upper(), path, param["in"], param["name"]))
    return found


def test_integer_parameters_at_their_extremes_never_5xx(fuzz_web, redis_client):
    """Deterministic boundary values for every integer path and query parameter (out of the database's
    range, negative, zero): a 4xx or a 2xx, never a 5xx."""
    url = fuzz_web.extra["url"]
    key = _seed()
    document = httpx.get(url + "/api/v1/openapi.json").json()
    parameters = _integer_parameters(document)
    assert parameters
    problems = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=15) as client:
        for method, path, location, name in parameters:
            for value in EXTREMES:
                concrete = path.replace("{" + name + "}", str(value)) if location == "path" else path
                concrete = "".join(part.split("}", 1)[-1] if "}" in part else part for part in concrete.split("{"))
                concrete = concrete.replace("//", "/1/")
                params = {name: value} if location == "query" else None
                response = client.request(method, concrete, params=params, json={} if method != "GET" else None)
                if response.status_code >= 500:
                    problems.append(
                        f"{method} {concrete} {params or ''} -> {response.status_code} {response.text[:200]}"
                    )
    assert not problems, "\n".join(problems)
