"""The README's gateway examples, one per client family, run as they stand: each Python block of the section
"Agents that speak OpenAI: the gateway" is run as a script (the openai-agents one with .run/venv-agents'
Python) with only the address, the key and the model name replaced by the test gateway's, its answer
printed and its call in the ledger."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.fixtures.stack import REPO_ROOT
from tests.integration.compat.conftest import AGENT_ENV, ledger_rows
from tests.integration.gateway.conftest import MOCK_A

pytestmark = pytest.mark.django_db(transaction=True)

SECTION = re.compile(r"^## Agents that speak OpenAI: the gateway\n(.*?)^## ", re.S | re.M)
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
ENV = {k: v for k, v in AGENT_ENV.items() if not k.startswith("ANTHROPIC_")}


def examples() -> dict[str, str]:
    """The section's Python blocks by client family (chat, responses, agents, anthropic)."""
    section = SECTION.search((REPO_ROOT / "README.md").read_text()).group(1)
    found = {}
    for code in BLOCK.findall(section):
        family = (
            "agents"
            if "from agents import" in code
            else "anthropic"
            if "from anthropic import" in code
            else "responses"
            if ".responses.create(" in code
            else "chat"
        )
        assert family not in found, f"two README examples for {family}"
        found[family] = code
    return found


@pytest.mark.parametrize(("family", "path"), [("chat", None), ("responses", "/responses"), ("agents", "/responses"), ("anthropic", "/messages")])  # fmt: skip
def test_the_readme_example_runs_as_it_stands(family, path, gateway, make_key, endpoint, agents_python):
    if path:
        endpoint(path)
    agent = f"compat-readme-{family}"
    code = examples()[family]
    assert 'api_key="ao_…"' in code and "http://127.0.0.1:8000" in code
    root = gateway.removesuffix("/v1")
    code = code.replace("http://127.0.0.1:8000", root).replace("ao_…", make_key(agent)).replace("gpt-4o-mini", MOCK_A)
    python = agents_python if family == "agents" else sys.executable
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=90, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "Mock answer to: Hi!"
    [row] = ledger_rows(agent, 1)
    assert row.model == MOCK_A and row.input_tokens > 0 and row.output_tokens > 0
