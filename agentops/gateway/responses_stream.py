"""A streamed ``/v1/responses`` answer: chat-completion chunks in (what the guarded chat path streams, held
tool calls already decided), Responses' typed server-sent events out, in OpenAI's order and numbered by
``sequence_number``::

    response.created, response.in_progress,
    per text item:  response.output_item.added, response.content_part.added, response.output_text.delta…,
                    response.output_text.done, response.content_part.done, response.output_item.done
    per call item:  response.output_item.added, response.function_call_arguments.delta…,
                    response.function_call_arguments.done, response.output_item.done
    response.completed (or response.incomplete) with usage — or error + response.failed

Pure functions over dicts and bytes (no Django).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentops.gateway.responses_wire import call_item, finished, message_item, output_text, usage
from agentops.gateway.wire import dumps


def sse(kind: str, payload: Mapping[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + dumps(payload) + b"\n\n"


class ResponsesEvents:
    """Turns one answer's chat chunks into Responses events. ``response`` is the shell (responses_wire.shell)."""

    def __init__(self, response: dict[str, Any]) -> None:
        self.response = response
        self.sequence = 0
        self.items: list[dict[str, Any]] = []
        self.texts: dict[int, str] = {}
        self.calls: dict[int, int] = {}  # a chat tool call's index -> its output index
        self.open: int | None = None  # the output index of the item being streamed
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.model: str | None = None

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self.sequence}
        self.sequence += 1
        return sse(kind, payload)

    def start(self) -> list[bytes]:
        return [
            self.event("response.created", response=self.response),
            self.event("response.in_progress", response=self.response),
        ]

    def feed(self, chunk: Mapping[str, Any]) -> list[bytes]:
        """The events of one chat chunk (none for a role-only or usage-only chunk)."""
        out: list[bytes] = []
        if chunk.get("model"):
            self.model = chunk["model"]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text(str(delta["content"]))
            for part in delta.get("tool_calls") or ():
                out += self._call(int(part.get("index") or 0), part)
            if delta.get("function_call"):
                out += self._call(-1, {"function": delta["function_call"]})
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _text(self, text: str) -> list[bytes]:
        out: list[bytes] = []
        if self.open is None or self.items[self.open]["type"] != "message":
            out += self._close()
            item = message_item("", status="in_progress")
            index = self._add(item)
            out.append(self.event("response.output_item.added", output_index=index, item=item))
            out.append(
                self.event(
                    "response.content_part.added",
                    item_id=item["id"],
                    output_index=index,
                    content_index=0,
                    part=output_text(""),
                )
            )
        index = self.open
        self.texts[index] += text
        out.append(
            self.event(
                "response.output_text.delta",
                item_id=self.items[index]["id"],
                output_index=index,
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return out

    def _call(self, chat_index: int, part: Mapping[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        function = part.get("function") or {}
        index = self.calls.get(chat_index)
        if index is None:
            out += self._close()
            item = call_item({"id": part.get("id"), "function": {"name": function.get("name")}}, status="in_progress")
            index = self.calls[chat_index] = self._add(item)
            out.append(self.event("response.output_item.added", output_index=index, item=item))
        item = self.items[index]
        if function.get("name") and not item["name"]:
            item["name"] = function["name"]
        arguments = function.get("arguments") or ""
        if arguments:
            item["arguments"] += arguments
            if self.open == index:  # (a call whose item was already done only grows its arguments)
                out.append(
                    self.event(
                        "response.function_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=arguments,
                    )
                )
        return out

    def _add(self, item: dict[str, Any]) -> int:
        self.items.append(item)
        self.open = len(self.items) - 1
        self.texts[self.open] = ""
        return self.open

    def _close(self) -> list[bytes]:
        """The events that end the open item (none when no item is open)."""
        index, self.open = self.open, None
        if index is None:
            return []
        item = self.items[index]
        item["status"] = "completed"
        out: list[bytes] = []
        if item["type"] == "message":
            text = self.texts[index]
            item["content"] = [output_text(text)]
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            out.append(self.event("response.output_text.done", **common, text=text, logprobs=[]))
            out.append(self.event("response.content_part.done", **common, part=output_text(text)))
        else:
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    name=item["name"],
                    arguments=item["arguments"],
                )
            )
        out.append(self.event("response.output_item.done", output_index=index, item=item))
        return out

    def finish(self) -> tuple[dict[str, Any], list[bytes]]:
        """The final response object, and the events that close its last item (send ``completed`` after)."""
        out = self._close()
        response = {**self.response, "output": self.items, "usage": usage(self.usage)}
        if self.model:
            response["model"] = self.model
        return finished(response, self.finish_reason), out

    def completed(self, response: Mapping[str, Any]) -> bytes:
        kind = "response.completed" if response["status"] == "completed" else "response.incomplete"
        return self.event(kind, response=response)

    def failed(self, error: Mapping[str, Any]) -> list[bytes]:
        """An upstream failure after the stream began: ``error`` then ``response.failed``."""
        out = self._close()
        code = error.get("code") or "server_error"
        message = str(error.get("message") or "The upstream failed.")
        out.append(self.event("error", code=code, message=message, param=error.get("param")))
        response = {
            **self.response,
            "status": "failed",
            "output": self.items,
            "error": {"code": code, "message": message},
        }
        out.append(self.event("response.failed", response=response))
        return out
