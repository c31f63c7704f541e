"""``/v1/embeddings``' wire format without a server: what a body may hold (OpenAI's params named in every
400), the checks per model (dimensions, 8192 tokens an input), the token bound the reservation holds, the
chain that answers, and vectors in float or base64 exactly as OpenAI sends them (the SDK's own types and
decoder read them)."""

from __future__ import annotations

import array
import base64
import json
import struct

import pytest
from openai.types import CreateEmbeddingResponse

from agentops.gateway.embeddings import (
    MAX_INPUTS,
    check_for_models,
    encoded,
    parse_embeddings_request,
    resolve_embeddings,
)
from agentops.gateway.wire import WireError
from agentops.runtime.config import RuntimeConfig
from agentops.runtime.embeddings import input_token_bound, item_tokens
from agentops.runtime.providers.base import embedding_item_count
from agentops.runtime.providers.simulated import simulated_embedding
from agentops.runtime.routing import Route, Target
from agentops.runtime.tokens import text_tokens

SMALL, LARGE, ADA = "text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"


def parse(**body):
    return parse_embeddings_request(json.dumps({"model": SMALL, "input": "hi", **body}).encode())


def refused(**body) -> WireError:
    with pytest.raises(WireError) as error:
        parse(**body)
    assert error.value.status == 400 and error.value.type == "invalid_request_error"
    return error.value


def test_a_body_keeps_every_field_but_model_and_input_for_the_upstream():
    request = parse(encoding_format="base64", dimensions=64, user="u-1", input_type="query", extra=None)
    assert (request.model, request.input, request.encoding_format, request.dimensions, request.user) == (
        SMALL, "hi", "base64", 64, "u-1",
    )  # fmt: skip
    assert request.upstream == {"encoding_format": "base64", "dimensions": 64, "user": "u-1", "input_type": "query"}
    plain = parse()
    assert (plain.encoding_format, plain.dimensions, plain.upstream) == ("float", None, {})  # OpenAI's default


@pytest.mark.parametrize(
    "value",
    ["one string", ["a", "b"], [1, 2, 3], [[1, 2], [3]], ["a", [1, 2]], ["x"] * MAX_INPUTS],
)
def test_inputs_openai_accepts(value):
    assert parse(input=value).input == value


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": None}, "input"),
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": {"text": "x"}}, "input"),
        ({"input": 7}, "input"),
        ({"input": ["x"] * (MAX_INPUTS + 1)}, "input"),
        ({"input": ["a", ""]}, "input[1]"),
        ({"input": ["a", None]}, "input[1]"),
        ({"input": [["a"]]}, "input[0]"),
        ({"input": [[]]}, "input[0]"),
        ({"input": [1, -1]}, "input[0]"),
        ({"input": [True]}, "input[0]"),
        ({"input": [2**40]}, "input[0]"),
        ({"input": "a\u0000b"}, "input"),
        ({"model": ""}, "model"),
        ({"model": 3}, "model"),
        ({"encoding_format": "int8"}, "encoding_format"),
        ({"dimensions": 0}, "dimensions"),
        ({"dimensions": True}, "dimensions"),
        ({"dimensions": 1.5}, "dimensions"),
        ({"user": ["u"]}, "user"),
    ],
)
def test_inputs_openai_refuses_name_their_param(body, param):
    assert refused(**body).param == param


@pytest.mark.parametrize(
    "raw", [b"{not json", b"[]", b"\xff\xfe", b'{"model": "m", "input": ' + b"[" * 500 + b"]" * 500]
)
def test_bodies_that_are_not_a_json_object_are_400s(raw):
    with pytest.raises(WireError) as error:
        parse_embeddings_request(raw)
    assert error.value.status == 400


def test_the_token_bound_is_exact_for_openais_models_and_the_utf8_length_otherwise():
    text = "Budget 预算 for agent: never overspend ✅"
    assert item_tokens(text, SMALL) == [text_tokens(text, SMALL)] and text_tokens(text, SMALL) < len(text.encode())
    assert item_tokens(text, "nomic-embed-text") == [len(text.encode())]
    assert item_tokens([[1, 2, 3], "ab"], SMALL) == [3, 1] and item_tokens([5, 6], "x") == [2]
    assert input_token_bound([text, "ab"], [SMALL, "nomic-embed-text"]) == len(text.encode()) + 2  # the chain's max
    assert [embedding_item_count(v) for v in ("a", [1, 2], [[1], [2]], ["a", "b", "c"])] == [1, 1, 2, 3]


def test_the_checks_per_model_are_openais():
    assert check_for_models(parse(dimensions=256), [SMALL, LARGE]) == text_tokens("hi", SMALL)
    with pytest.raises(WireError, match="does not support specifying dimensions") as ada:
        check_for_models(parse(dimensions=256), [SMALL, ADA])  # a backup that could not honour it
    assert ada.value.param == "dimensions"
    with pytest.raises(WireError) as wide:
        check_for_models(parse(dimensions=1537), [SMALL])
    assert wide.value.param == "dimensions"
    check_for_models(parse(dimensions=5000), ["my-local-model"])  # not OpenAI's: its server decides
    with pytest.raises(WireError, match="maximum context length is 8192") as long:
        check_for_models(parse(input=["ok", "word " * 9000]), [SMALL])
    assert long.value.param == "input[1]"
    with pytest.raises(WireError) as ids:
        check_for_models(parse(input=list(range(8193))), [ADA])
    assert ids.value.param == "input"
    with pytest.raises(WireError, match="max 300000 tokens"):
        check_for_models(parse(input=[list(range(8000))] * 40), [SMALL])


def test_which_models_answer():
    config = RuntimeConfig(
        routes=(
            Route("vectors", (Target("p", SMALL), Target("p", ADA))),
            Route("embeddings", (Target("p", LARGE), Target("q", "local-embed"))),
        ),
        default_chain=(Target("sim", "gpt-4o"),),
        default_upstream="openai",
    )
    assert resolve_embeddings(config, "vectors", "embeddings").chain == (Target("p", SMALL), Target("p", ADA))
    # a model a route lists: first, with the operation's route behind it; never the default chat chain
    assert resolve_embeddings(config, SMALL, "embeddings").chain == (
        Target("p", SMALL), Target("p", LARGE), Target("q", "local-embed"),
    )  # fmt: skip
    assert resolve_embeddings(config, ADA, "other").chain == (Target("p", ADA),)
    assert resolve_embeddings(config, "elsewhere", "embeddings").chain == (Target("openai", "elsewhere"),)
    route = resolve_embeddings(config, "vectors", "embeddings")
    assert not route.use_rules and not route.use_human
    with pytest.raises(WireError) as missing:
        resolve_embeddings(RuntimeConfig(), "nothing", "embeddings")
    assert missing.value.status == 404 and missing.value.code == "model_not_found"


def test_vectors_travel_as_little_endian_float32_as_openai_sends_them():
    vector = simulated_embedding(SMALL, "hi", 8)
    body = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": list(vector)}],
            "model": SMALL, "usage": {"prompt_tokens": 1, "total_tokens": 1}}  # fmt: skip
    assert encoded(body, "base64")
    text = body["data"][0]["embedding"]
    assert base64.b64decode(text) == struct.pack("<8f", *vector)
    assert array.array("f", base64.b64decode(text)).tolist() == vector  # what the SDK decodes it with
    assert not encoded(body, "base64")  # already so: nothing to do
    assert encoded(body, "float") and body["data"][0]["embedding"] == vector
    assert CreateEmbeddingResponse.model_validate(body).data[0].embedding == vector


def test_simulated_vectors_are_deterministic_unit_vectors_of_the_models_width():
    one = simulated_embedding(SMALL, "hi")
    assert one == simulated_embedding(SMALL, "hi") != simulated_embedding(SMALL, "ho")
    assert simulated_embedding(LARGE, "hi") != simulated_embedding(SMALL, "hi")
    assert [len(simulated_embedding(m, "hi")) for m in (SMALL, LARGE, ADA, "anything")] == [1536, 3072, 1536, 1536]
    short = simulated_embedding(LARGE, [1, 2, 3], 100)
    assert len(short) == 100 and abs(sum(v * v for v in short) - 1.0) < 1e-6
    assert struct.unpack("<100f", struct.pack("<100f", *short)) == tuple(short)  # already float32
