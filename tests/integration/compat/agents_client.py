"""An agent written with the openai-agents SDK, unmodified, pointed at the gateway: run by the compatibility
tests with the Python of .run/venv-agents (requirements-agents.txt; the SDK cannot live in .venv), so it
imports nothing of agentops. It prints one JSON object on its last line of stdout.

    python agents_client.py '{"scenario": "chat", "base_url": "http://…/v1", "api_key": "ao_…", "model": "mock-a"}'

Scenarios: ``chat`` — an agent on ``OpenAIChatCompletionsModel`` answers; ``tool`` — the same agent calls a
function tool and answers from its result; ``risky`` — it calls ``delete_account`` (the gateway holds the
answer for a reviewer); ``responses`` — an agent on the SDK's default model (the Responses API) answers.
The model's tool calls come from the mock's ``mock_tool_calls`` knob, sent with ``ModelSettings.extra_body``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    Runner,
    function_tool,
    set_default_openai_api,
    set_default_openai_client,
    set_tracing_disabled,
)
from openai import AsyncOpenAI, DefaultAsyncHttpxClient

GUARD_HEADERS = ("x-agentops-request-id", "x-agentops-overhead-ms", "x-agentops-cache", "x-agentops-handler")
TOOL_CALLS = {
    "tool": [{"name": "lookup_weather", "arguments": {"city": "Paris"}}],
    "risky": [{"name": "delete_account", "arguments": {"account": "acme"}}],
}
ran: list[str] = []


@function_tool
def lookup_weather(city: str) -> str:
    """The weather in a city."""
    ran.append(f"lookup_weather({city})")
    return f"sunny in {city}"


@function_tool
def delete_account(account: str) -> str:
    """Delete a customer account."""
    ran.append(f"delete_account({account})")
    return f"account {account} deleted"


async def main(spec: dict) -> dict:
    seen: list[dict] = []

    async def keep_headers(response) -> None:
        seen.append({"status": response.status_code, **{h: response.headers.get(h) for h in GUARD_HEADERS}})

    client = AsyncOpenAI(
        base_url=spec["base_url"],
        api_key=spec["api_key"],
        max_retries=0,
        timeout=60,
        http_client=DefaultAsyncHttpxClient(event_hooks={"response": [keep_headers]}),
    )
    set_tracing_disabled(True)
    scenario = spec["scenario"]
    settings = ModelSettings(extra_body={"mock_tool_calls": TOOL_CALLS[scenario]}) if scenario in TOOL_CALLS else None
    if scenario == "responses":
        set_default_openai_client(client, use_for_tracing=False)
        set_default_openai_api("responses")
        model = spec["model"]  # a name: the SDK's default model class, OpenAIResponsesModel
    else:
        model = OpenAIChatCompletionsModel(model=spec["model"], openai_client=client)
    agent = Agent(
        name="compat-agent",
        instructions="Answer briefly.",
        model=model,
        tools=[lookup_weather, delete_account],
        **({"model_settings": settings} if settings else {}),
    )
    result = await Runner.run(agent, spec["input"], max_turns=4)
    usage = result.context_wrapper.usage
    return {
        "final_output": result.final_output,
        "model_class": type(agent.model).__name__ if not isinstance(agent.model, str) else "default",
        "raw_model_class": type(result.raw_responses[0]).__name__,
        "usage": {"requests": usage.requests, "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens},
        "per_call": [
            {"input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens} for r in result.raw_responses
        ],
        "ran": ran,
        "http": seen,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
