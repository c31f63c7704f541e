"""What a guarded call answers (``GuardResult``) and how an answer is kept in and read back from the cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentops.runtime.fallback import Hop
from agentops.runtime.providers.base import LLMRequest

if TYPE_CHECKING:  # the type only: a streamed answer's iterator lives with the pipeline that settles it
    from agentops.runtime.guard import GuardedStream


@dataclass(frozen=True)
class GuardResult:
    """The answer of a guarded call and how it was obtained."""

    text: str
    model: str
    provider: str
    handler: str  # primary | backup | backup_N | rules | human | cache
    operation: str = "default"
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    attempts: int = 0
    hops: tuple[Hop, ...] = ()
    cache_hit: bool = False
    duration_ms: float = 0.0
    finish_reason: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    error_class: str | None = None  # the last error seen on the way, if any
    replayed: bool = False
    upstream_ms: float = 0.0  # of duration_ms, spent waiting for providers or backing off between attempts
    raw: dict[str, Any] | None = None  # the provider's own response body (passthrough requests)
    stream: GuardedStream | None = None  # a streamed answer: iterate it, then it settles (see GuardedStream)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "provider": self.provider,
            "handler": self.handler,
            "operation": self.operation,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "attempts": self.attempts,
            "hops": [hop.to_dict() for hop in self.hops],
            "cache_hit": self.cache_hit,
            "duration_ms": round(self.duration_ms, 3),
            "finish_reason": self.finish_reason,
            "tool_calls": self.tool_calls,
            "error_class": self.error_class,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> GuardResult:
        values = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        values["hops"] = tuple(Hop.from_dict(h) for h in data.get("hops") or ())
        values.update(overrides)
        return cls(**values)


def to_cache_entry(result: GuardResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "model": result.model,
        "provider": result.provider,
        "finish_reason": result.finish_reason,
        "tool_calls": result.tool_calls,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
    }


def from_cache_entry(value: Mapping[str, Any], request: LLMRequest, source: str, duration_ms: float) -> GuardResult:
    # A hit costs nothing: zero tokens are reported and recorded (the original counts stay in the cache).
    return GuardResult(
        text=value["text"],
        model=value["model"],
        provider=value["provider"],
        handler="cache",
        operation=request.operation,
        attempts=0,
        hops=(Hop("cache", "ok", target=source),),
        cache_hit=True,
        duration_ms=duration_ms,
        finish_reason=value.get("finish_reason"),
        tool_calls=value.get("tool_calls"),
    )
