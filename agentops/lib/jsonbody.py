"""JSON request bodies the rest of the system can hold: the one parse for the REST API (agentops/api/'s
parser) and the gateway (gateway/wire.py). Pure Python, no Django.

Two kinds of input turned into 5xx further in before this existing:
- text PostgreSQL cannot store: ``text`` and ``jsonb`` refuse U+0000, and a lone surrogate (``"\\ud800"``)
  cannot even be encoded as UTF-8. Refusing them at the edge, anywhere in the body (keys of free-form
  objects included), is one rule for every field instead of one validator per field that a new field
  can forget. Stripping would silently change what an agent asked for (an argument, a prompt).
- nesting: Python's decoder raises ``RecursionError`` a thousand levels down, and code walking a parsed
  body recursively (validators, encoders) fails far sooner than that. Bodies nest at most ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 64  # a tool's JSON schema nests a few levels per property; 64 is far past any real one

# A parsed string can hold NUL or a surrogate half only through a \\u escape (strict JSON refuses a raw
# control character and UTF-8 cannot encode a surrogate), so most bodies skip the walk entirely.
_SUSPECT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class BodyProblem(ValueError):
    """Why a body is refused: ``path`` names the field (``("context", "extra")``); ``malformed`` tells a
    structural problem (400) from a value that is well-formed JSON but cannot be stored (422)."""

    def __init__(self, message: str, path: tuple = (), *, malformed: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.malformed = malformed

    @property
    def where(self) -> str:
        """The path as ``messages[0].content`` (empty for the body itself)."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text


def loads(raw: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """The parsed body, or ``BodyProblem``; other ``ValueError`` (not JSON, not UTF-8) is left to the caller."""
    text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
    try:
        value = json.loads(text)
    except RecursionError:
        raise BodyProblem(f"the JSON body is nested too deep (at most {max_depth} levels)", malformed=True) from None
    if text.count("[") + text.count("{") > max_depth or _SUSPECT.search(text):
        check(value, max_depth)
    return value


def check(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``BodyProblem`` for the first string (value or key) PostgreSQL cannot store, or for nesting
    deeper than ``max_depth``. Iterative: a deep value cannot exhaust the stack here."""
    stack: list[tuple[Any, tuple, int]] = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                message = f"the JSON body is nested too deep (at most {max_depth} levels)"
                raise BodyProblem(message, path[:1], malformed=True)  # the top field: a path this long says nothing
            if isinstance(item, dict):
                for key, child in item.items():
                    if isinstance(key, str):
                        _check_text(key, path, key=True)
                    stack.append((child, (*path, key), depth + 1))
            else:
                stack.extend((child, (*path, index), depth + 1) for index, child in enumerate(item))


def _check_text(text: str, path: tuple, key: bool = False) -> None:
    if "\x00" in text:
        problem = "contains a NUL character (\\u0000), which cannot be stored"
    else:
        try:
            text.encode("utf-8")
            return
        except UnicodeEncodeError:
            problem = "is not valid Unicode (a lone surrogate)"
    where = BodyProblem("", path).where or "the body"
    raise BodyProblem(f"{'a key of ' if key else ''}{where} {problem}", path)
