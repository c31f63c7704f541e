"""The mock's provider quirks for tool calls, over real HTTP with the official SDK: calls without ids, calls
sharing one id, a legacy ``function_call`` when the request lists ``functions``, and the streamed shapes
(name and id only in a call's first delta, arguments in pieces, ``index`` per call; usage in the last
chunk only)."""

from __future__ import annotations

import json

MESSAGES = [{"role": "user", "content": "clean up"}]
CALLS = [{"name": "delete_a", "arguments": {"x": 1}, "id": None}, {"name": "delete_b", "id": "same"}]


def test_tool_calls_without_ids_or_sharing_one(mock):
    shared = [*CALLS, {"name": "delete_c", "id": "same"}]
    answer = mock.client().chat.completions.create(model="m", messages=MESSAGES, extra_body={"mock_tool_calls": shared})
    assert [call.id for call in answer.choices[0].message.tool_calls] == [None, "same", "same"]


def test_a_request_listing_functions_gets_a_legacy_function_call(mock):
    answer = mock.client().chat.completions.create(
        model="m", messages=MESSAGES, functions=[{"name": "delete_a"}], extra_body={"mock_tool_calls": CALLS}
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert (choice.message.function_call.name, json.loads(choice.message.function_call.arguments)) == (
        "delete_a",
        {"x": 1},
    )


def test_streamed_calls_come_in_pieces_and_usage_only_last(mock):
    chunks = list(
        mock.client().chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"mock_tool_calls": [{"name": "delete_a", "arguments": {"long": "x" * 30}, "id": None}]},
        )
    )
    parts = [part for c in chunks if c.choices for part in c.choices[0].delta.tool_calls or ()]
    assert parts[0].function.name == "delete_a" and all(p.function.name is None for p in parts[1:])
    assert all(p.id is None for p in parts) and {p.index for p in parts} == {0} and len(parts) > 3
    assert json.loads("".join(p.function.arguments for p in parts)) == {"long": "x" * 30}
    assert [c.usage is not None for c in chunks] == [False] * (len(chunks) - 1) + [True]
    legacy = list(
        mock.client().chat.completions.create(
            model="m", messages=MESSAGES, stream=True, functions=[{"name": "delete_a"}],
            extra_body={"mock_tool_calls": CALLS},
        )
    )  # fmt: skip
    pieces = [c.choices[0].delta.function_call for c in legacy if c.choices and c.choices[0].delta.function_call]
    assert pieces[0].name == "delete_a" and json.loads("".join(p.arguments for p in pieces)) == {"x": 1}
    assert legacy[-1].choices[0].finish_reason == "function_call"
