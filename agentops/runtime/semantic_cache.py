"""The semantic cache: answer a request whose meaning matches a cached one's, on the routes that opt in.

The guard asks it right after an exact-cache miss (so only calls the exact cache would take: never a
side-effecting or streamed call) and hands it the answer right after the exact store::

    probe = deps.semantic.lookup(request, route, deps)   # None: the route did not opt in, or nothing to compare
    probe.hit → answer from it (no reservation, no upstream, zero tokens)
    probe.finish(result, store=…) → store the fresh answer under the probe's vector; a near miss is noted

What may hit (``semantic_text``): the same partition (agent, operation, model, route, every message but
the last user one — so the system prompt —, tools, tool_choice, response_format and other upstream fields,
max_tokens, temperature class, embedder), a cosine similarity ≥ the route's threshold, and the same
numbers, negations, quoted strings and entities (the guard rails against look-alikes).

Vectors come from the route's embeddings model through ``guarded_embeddings`` (budgeted, metered, cached
exactly) or, when it names none, from the offline embedder.

Storage: per partition a Redis hash of entries (vector, guard-rail signature, answer, expiry), a sorted set
keeping the newest ``max_entries`` and a version counter, all written by one Lua script and expiring with the
route's TTL, so every web and worker process sees every entry. Each process keeps the partition's vectors as
one numpy matrix and re-reads the hash only when the version moved (checked at most every
``refresh_seconds``). Nearest neighbour: an exact scan (matrix @ vector) of the bounded set — measured
faster than an HNSW index at this size (usearch 2.26, 1 query, 256-d: 64 entries 20 µs vs 135 µs, 256
entries 20 µs vs 190 µs; 1536-d, 256 entries 113 µs vs 556 µs). Redis away: the process's own entries only,
never an error. Pure Python + numpy: no Django.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agentops.observability.metrics import SEMANTIC_CACHE, SEMANTIC_SIMILARITY
from agentops.runtime.cache import REDIS_ERRORS, RedisBackoff
from agentops.runtime.embeddings import guarded_embeddings
from agentops.runtime.fallback import Hop
from agentops.runtime.providers.base import EmbeddingsRequest, LLMRequest
from agentops.runtime.providers.responses_native import NATIVE_KEY
from agentops.runtime.results import GuardResult, to_cache_entry
from agentops.runtime.routing import Route, SemanticSettings, Target
from agentops.runtime.semantic_text import (
    OFFLINE_EMBEDDER,
    offline_embedding,
    partition_key,
    question_of,
    same_facts,
    signature,
)

if TYPE_CHECKING:
    from agentops.runtime.guard import GuardDeps

logger = logging.getLogger(__name__)

NEAR_MISS_MARGIN = 0.05  # a best match this close under the threshold is a near miss (timeline, metrics)
SEMANTIC = "semantic_cache"  # the hop's handler and the embeddings call's operation

# KEYS: entries hash, order zset, version; ARGV: id, entry JSON, now (ms), max entries, ttl (ms).
_STORE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if extra > 0 then
  local old = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
end
local version = redis.call('INCR', KEYS[3])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[5]) end
return version
"""


@dataclass
class _Partition:
    """One partition's entries in this process: ids, their vectors as one matrix, their entries."""

    version: int = -1
    checked_at: float = float("-inf")
    ids: list[str] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)
    matrix: np.ndarray | None = None
    # Entries this process stored that Redis may not hold yet (their publish is deferred or failed): a re-read
    # from Redis keeps them, so a paraphrase right after a fresh answer still finds it here.
    pending: dict[str, tuple[dict[str, Any], np.ndarray]] = field(default_factory=dict)

    def add(self, entry_id: str, entry: dict[str, Any], vector: np.ndarray, max_entries: int) -> None:
        items = [*zip(self.ids, self.entries, list(self.matrix) if self.matrix is not None else [], strict=True)]
        items = [item for item in items if item[0] != entry_id][-(max_entries - 1) :] if max_entries > 1 else []
        self.set([*items, (entry_id, entry, vector)])
        self.pending[entry_id] = (entry, vector)

    def set(self, items: list[tuple[str, dict[str, Any], np.ndarray]]) -> None:
        self.ids = [item[0] for item in items]
        self.entries = [item[1] for item in items]
        self.matrix = np.vstack([item[2] for item in items]) if items else None
        kept = set(self.ids)  # an entry pushed out of the bounded partition is no longer pending either
        self.pending = {i: pending for i, pending in self.pending.items() if i in kept}


@dataclass
class Probe:
    """One look-up's outcome: what to answer with (``hit``) or what to store the fresh answer under."""

    cache: SemanticCache
    settings: SemanticSettings
    partition: str
    vector: np.ndarray
    signature: dict[str, list[str]]
    similarity: float | None = None  # the best neighbour's, whether or not it passed
    hit: dict[str, Any] | None = None  # the cached entry that answers

    @property
    def near_miss(self) -> bool:
        return (
            self.hit is None
            and self.similarity is not None
            and self.settings.threshold - NEAR_MISS_MARGIN <= self.similarity < self.settings.threshold
        )

    def result(self, request: LLMRequest, duration_ms: float) -> GuardResult:
        """The hit as the guard's answer: zero tokens, one ``semantic_cache`` hop naming the similarity."""
        answer = self.hit["answer"]
        return GuardResult(
            text=answer["text"],
            model=answer["model"],
            provider=answer["provider"],
            handler="cache",
            operation=request.operation,
            hops=(Hop(SEMANTIC, "ok", target=self.settings.route, reason=f"similarity {self.similarity:.3f}"),),
            cache_hit=True,
            duration_ms=duration_ms,
            finish_reason=answer.get("finish_reason"),
            tool_calls=answer.get("tool_calls"),
        )

    def finish(
        self, result: GuardResult, *, store: bool, defer: Callable[[Callable[[], None]], None] | None = None
    ) -> GuardResult:
        """After a fresh answer: store it (``store``: a model answered; through ``defer`` when given) and
        return ``result`` with a near miss noted first among its hops (the run timeline shows it)."""
        if store:
            # This process answers the next paraphrase at once (the very next request may come before deferred
            # work runs); other processes see the entry once it is in Redis.
            stored = self.cache.remember(self, to_cache_entry(result))
            if stored is not None:
                if defer is not None:
                    defer(lambda: self.cache.publish(self, *stored))
                else:
                    self.cache.publish(self, *stored)
        if self.near_miss:
            reason = f"similarity {self.similarity:.3f} < {self.settings.threshold:.3f}"
            hop = Hop(SEMANTIC, "near_miss", target=self.settings.route, reason=reason)
            result = dataclasses.replace(result, hops=(hop, *result.hops))
        return result


def semantic_headers(result: GuardResult, use_cache: bool) -> list[tuple[bytes, bytes]]:
    """The gateway's cache headers: ``X-Agentops-Cache: hit | semantic-hit | miss | bypass``, and on a
    semantic hit ``X-Agentops-Similarity`` (the cosine similarity that matched)."""
    if result.cache_hit and result.hops and result.hops[0].handler == SEMANTIC:
        similarity = (result.hops[0].reason or "").rpartition(" ")[2]
        return [(b"x-agentops-cache", b"semantic-hit"), (b"x-agentops-similarity", similarity.encode("ascii"))]
    return [(b"x-agentops-cache", b"hit" if result.cache_hit else (b"miss" if use_cache else b"bypass"))]


class SemanticCache(RedisBackoff):
    """Every route's semantic cache in this process (see the module)."""

    def __init__(
        self,
        redis_client: Any,
        *,
        max_entries: int = 256,
        max_partitions: int = 512,
        refresh_seconds: float = 0.2,
        key_prefix: str = "agentops:semcache:",
        redis_retry_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis_client
        self.max_entries = max_entries
        self._max_partitions = max_partitions
        self._refresh = refresh_seconds
        self._prefix = key_prefix
        self._retry_interval = redis_retry_interval
        self._clock = clock
        self._redis_failed_at: float | None = None
        self._partitions: OrderedDict[str, _Partition] = OrderedDict()
        self._lock = threading.Lock()
        self._script = redis_client.register_script(_STORE) if redis_client is not None else None

    # --- look-up -----------------------------------------------------------------------------------
    def lookup(self, request: LLMRequest, route: Route, deps: GuardDeps) -> Probe | None:
        """The probe for ``request`` on ``route``; None when the route did not opt in or there is nothing to
        compare (no user question last). Never raises: a failing embedder or Redis is a miss."""
        settings = route.semantic
        if settings is None:
            return None
        question = question_of(request.messages)
        if question is None:
            self._count(settings, "skipped")
            return None
        try:
            embedded = self._embed(question, settings, request, deps)
            if embedded is None:
                self._count(settings, "skipped")
                return None
            embedder, vector = embedded
            partition = partition_key(
                scope=request.metadata.get("cache_scope", request.metadata.get("agent")),
                operation=request.operation,
                model=request.model,
                route=[target.name for target in route.chain],
                messages=request.messages,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                # A /v1/responses call carries its client's whole body for a provider that speaks Responses: the
                # same conversation as the messages, question included, so it would give every paraphrase a
                # partition of its own (/v1/responses never hit). The messages stand for it.
                extra={key: value for key, value in request.extra.items() if key != NATIVE_KEY},
                embedder=embedder,
            )
        except Exception:  # an unserialisable message, a refused embeddings budget, an upstream down: a miss
            logger.warning("semantic cache: look-up for %s skipped", settings.route, exc_info=True)
            self._count(settings, "skipped")
            return None
        probe = Probe(self, settings, partition, vector, signature(question))
        self._search(probe)
        return probe

    def _search(self, probe: Probe) -> None:
        part = self._partition(probe.partition)
        if part.matrix is None or part.matrix.shape[1] != probe.vector.shape[0]:
            self._count(probe.settings, "miss")
            return
        scores = part.matrix @ probe.vector
        now = self._clock()
        order = np.argsort(-scores)
        probe.similarity = float(scores[order[0]])
        SEMANTIC_SIMILARITY.labels(route=probe.settings.route).observe(probe.similarity)
        result = "miss"
        for index in order[:8]:  # the best few: a look-alike may sit just above the paraphrase
            score = float(scores[index])
            if score < probe.settings.threshold:
                break
            entry = part.entries[index]
            if entry["expires"] <= now:
                continue
            if not same_facts(probe.signature, entry["signature"]):
                result = "lookalike"
                continue
            probe.similarity, probe.hit = score, entry
            result = "hit"
            break
        if result == "miss" and probe.near_miss:
            result = "near_miss"
        self._count(probe.settings, result)

    # --- store -------------------------------------------------------------------------------------
    def store(self, probe: Probe, answer: dict[str, Any]) -> None:
        """``answer`` under the probe's vector, in this process at once and in Redis for every other."""
        stored = self.remember(probe, answer)
        if stored is not None:
            self.publish(probe, *stored)

    def remember(self, probe: Probe, answer: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """``answer`` in this process's copy of the partition; returns its entry (for ``publish``)."""
        try:
            entry = {
                "signature": probe.signature,
                "answer": answer,
                "expires": self._clock() + probe.settings.ttl,
            }
            entry_id = f"{int(self._clock() * 1e6):x}{id(entry) & 0xFFFF:04x}"
            with self._lock:
                part = self._partitions.get(probe.partition) or _Partition()
                part.add(entry_id, entry, probe.vector, self.max_entries)
                self._remember(probe.partition, part)
        except Exception:
            logger.exception("semantic cache: storing an answer failed")
            return None
        return entry_id, entry

    def publish(self, probe: Probe, entry_id: str, entry: dict[str, Any]) -> None:
        """The entry ``remember`` kept, into Redis for every other process (Redis away: this process only)."""
        if not self._redis_usable():
            return
        wire = {**entry, "vector": base64.b64encode(probe.vector.astype("<f4").tobytes()).decode("ascii")}
        try:
            version = int(
                self._script(
                    keys=self._keys(probe.partition),
                    args=[
                        entry_id,
                        json.dumps(wire, separators=(",", ":")),
                        int(self._clock() * 1000),
                        self.max_entries,
                        max(1, int(probe.settings.ttl * 1000)),
                    ],
                )
            )
            self._redis_failed_at = None
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return
        except Exception:
            logger.exception("semantic cache: storing an answer failed")
            return
        with self._lock:
            part = self._partitions.get(probe.partition)
            if part is None:
                return
            part.pending.pop(entry_id, None)
            # Only this store since the last read: the local copy is current; else re-read on the next look-up.
            if version == part.version + 1:
                part.version = version
            else:
                part.checked_at = float("-inf")

    # --- internals ---------------------------------------------------------------------------------
    def _embed(
        self, text: str, settings: SemanticSettings, request: LLMRequest, deps: GuardDeps
    ) -> tuple[str, np.ndarray] | None:
        model = settings.embeddings_model
        if not model:
            return OFFLINE_EMBEDDER, offline_embedding(text)
        cfg = deps.config.get()
        provider = cfg.router.provider_for(model) or cfg.default_upstream
        if provider is None or provider not in deps.providers:
            logger.warning("semantic cache: no provider serves embeddings model %r; look-up skipped", model)
            return None
        metadata = {k: v for k, v in request.metadata.items() if k != "prompt_tokens_estimate"}
        answer = guarded_embeddings(
            EmbeddingsRequest(input=text, model=model, operation=SEMANTIC, metadata={**metadata, "purpose": SEMANTIC}),
            deps=deps,
            route=Route(SEMANTIC, (Target(provider, model),), use_rules=False, use_human=False),
        )
        values = answer.result.raw["data"][0]["embedding"]
        if isinstance(values, str):  # base64 little-endian float32
            vector = np.frombuffer(base64.b64decode(values), dtype="<f4").astype(np.float32)
        else:
            vector = np.asarray(values, dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        return f"model:{model}", (vector / norm if norm else vector)

    def _partition(self, key: str) -> _Partition:
        """This process's copy of a partition, re-read from Redis when its version moved."""
        now = time.monotonic()
        with self._lock:
            part = self._partitions.get(key)
            if part is not None:
                self._partitions.move_to_end(key)
                if now - part.checked_at < self._refresh:
                    return part
        if not self._redis_usable():
            return part or _Partition()
        entries_key, _, version_key = self._keys(key)
        try:
            raw_version = self._redis.get(version_key)
            version = int(raw_version or 0)
            if part is not None and version == part.version:
                part.checked_at = now
                return part
            raw = self._redis.hgetall(entries_key) if version else {}
            self._redis_failed_at = None
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return part or _Partition()
        fresh = _Partition(version=version, checked_at=now)
        items = []
        for entry_id, text in raw.items():
            try:
                data = json.loads(text)
                vector = np.frombuffer(base64.b64decode(data.pop("vector")), dtype="<f4").astype(np.float32)
            except (ValueError, KeyError, TypeError):
                continue
            items.append((entry_id.decode() if isinstance(entry_id, bytes) else entry_id, data, vector))
        with self._lock:
            if part is not None:  # what this process stored and Redis does not hold yet stays
                known = {item[0] for item in items}
                fresh.pending = {i: kept for i, kept in part.pending.items() if i not in known}
                items += [(i, entry, vector) for i, (entry, vector) in fresh.pending.items()]
            items.sort(key=lambda item: item[0])
            fresh.set(items[-self.max_entries :])
            self._remember(key, fresh)
        return fresh

    def _remember(self, key: str, part: _Partition) -> None:
        self._partitions[key] = part
        self._partitions.move_to_end(key)
        while len(self._partitions) > self._max_partitions:
            self._partitions.popitem(last=False)

    def _keys(self, partition: str) -> list[str]:
        base = f"{self._prefix}{{{partition}}}"  # one hash slot for the three keys (Redis Cluster)
        return [f"{base}:entries", f"{base}:order", f"{base}:version"]

    def _count(self, settings: SemanticSettings, result: str) -> None:
        SEMANTIC_CACHE.labels(route=settings.route, result=result).inc()

    def _redis_warning(self, exc: Exception) -> None:
        logger.warning("semantic cache: Redis error (%s); this process's entries only for now", exc)

    def clear_memory(self) -> None:
        with self._lock:
            self._partitions.clear()
