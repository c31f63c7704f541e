"""What the mock answers on ``POST /v1/embeddings``, as OpenAI does: one deterministic unit vector per input
(seeded from a hash of the model and the input, so the same request always gets the same vectors), 1536 wide
(3072 for text-embedding-3-large), ``dimensions`` honoured for the models that accept it and refused with
OpenAI's 400 for text-embedding-ada-002, ``encoding_format`` ``float`` (the default) or ``base64`` (the
little-endian float32 bytes), ``usage`` counted with OpenAI's tokenizer (a token list counts its ids), and
the dated name OpenAI answers with (``text-embedding-ada-002`` answers as ``text-embedding-ada-002-v2``)."""

from __future__ import annotations

import base64
import struct
from typing import Any

from agentops.demo.mock_usage import answered_name, count_tokens
from agentops.runtime.providers.simulated import embedding_width, simulated_embedding


class EmbeddingsRefused(Exception):
    """A request OpenAI would refuse with a 400."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _items(value: Any) -> list[Any]:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return [value]
    if isinstance(value, list) and 0 < len(value) <= 2048:
        for item in value:
            if not (isinstance(item, str) and item) and not (
                isinstance(item, list) and item and all(isinstance(v, int) and not isinstance(v, bool) for v in item)
            ):
                break
        else:
            return value
    raise EmbeddingsRefused(
        "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
        "input",
    )


def embeddings_response(req: dict[str, Any], *, empty: bool = False) -> dict[str, Any]:
    """The answer to ``req`` (raises ``EmbeddingsRefused``); ``empty``: a broken answer with no vectors."""
    model = str(req.get("model") or "")
    if not model:
        raise EmbeddingsRefused("you must provide a model parameter", "model")
    items = _items(req.get("input"))
    width, accepts = embedding_width(model)
    dimensions = req.get("dimensions")
    if dimensions is not None:
        if not accepts:
            raise EmbeddingsRefused("This model does not support specifying dimensions.", "dimensions")
        if not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= width:
            raise EmbeddingsRefused(f"Invalid value for 'dimensions': must be between 1 and {width}.", "dimensions")
    encoding = req.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise EmbeddingsRefused(
            f"Invalid value for 'encoding_format': {encoding!r}; supported values are 'float' and 'base64'.",
            "encoding_format",
        )
    data = []
    for index, item in enumerate([] if empty else items):
        vector = simulated_embedding(model, item, dimensions)
        embedding: Any = vector
        if encoding == "base64":
            embedding = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    tokens = sum(len(item) if isinstance(item, list) else count_tokens(item, model) for item in items)
    return {
        "object": "list",
        "data": data,
        "model": answered_name(model),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
