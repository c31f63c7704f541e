"""Two-level response cache: an in-process LRU in front of Redis.

``get`` looks in this process's memory first (bounded LRU, TTL-aware), then in Redis, and a Redis hit is
copied into memory with the *remaining* Redis TTL, so a memory entry never outlives the shared one. Values
are stored as canonical JSON at both levels, so every hit returns a fresh object equal to the JSON round trip
of what was stored (callers may mutate it freely; memory and Redis hits look the same).

Redis is an optimisation here, never a dependency: any Redis error is a miss on read and a skipped store on
write; after an error Redis is left alone for ``redis_retry_interval`` seconds so a dead Redis does not add a
connection attempt to every call.

``set(key, value, background=True)`` (what the guard uses after a miss) stores the memory level at once and
hands the Redis SET to one writer thread per cache per process, which writes whatever piled up in one pipelined
round trip: the caller never waits on Redis for a store, and other processes see the entry a moment later
(``flush()`` waits for it). Writes still queued when the process dies are lost — it is a cache.

Keys: ``cache_key(kind, request)`` = ``"<kind>:" + sha256(canonical JSON of the request)``. Whether a call is
cacheable at all (side-effecting tools never are) is the caller's decision. Pure Python: no Django import.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import redis

from agentops.observability.metrics import CACHE_REQUESTS

logger = logging.getLogger(__name__)

REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


@dataclass(frozen=True)
class CacheSpec:
    name: str
    ttl_seconds: float
    max_entries: int


# The seed's caches (DESIGN.md §11); their TTL and size are edited in the runtime settings
# (RuntimeConfig.caches), which a cache built with ``spec_source`` reads live.
LLM_RESPONSES, TOOL_RESULTS, USER_PROFILES = "llm_responses", "tool_results", "user_profiles"
CACHE_SPECS: dict[str, CacheSpec] = {
    LLM_RESPONSES: CacheSpec(LLM_RESPONSES, 3600, 1000),
    TOOL_RESULTS: CacheSpec(TOOL_RESULTS, 1800, 500),
    USER_PROFILES: CacheSpec(USER_PROFILES, 86400, 100),
}


@dataclass(frozen=True)
class CacheHit:
    value: Any
    source: Literal["memory", "redis"]


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: the same request always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def cache_key(kind: str, request: Mapping[str, Any]) -> str:
    """``"<kind>:<sha256 hex of the canonical JSON of request>"``."""
    digest = hashlib.sha256(canonical_json(request).encode("utf-8")).hexdigest()
    return f"{kind}:{digest}"


class RedisBackoff:
    """Redis as an optimisation: after an error it is left alone for ``_retry_interval`` seconds, so a dead
    Redis does not add a connection attempt to every call (the subclass sets ``_redis``, ``_redis_failed_at``
    and ``_retry_interval``, clears ``_redis_failed_at`` after a success, and says what an error means)."""

    _redis = None
    _redis_failed_at: float | None = None
    _retry_interval: float = 1.0

    def _redis_usable(self) -> bool:
        if self._redis is None:
            return False
        failed = self._redis_failed_at
        return failed is None or time.monotonic() - failed >= self._retry_interval

    def _redis_failed(self, exc: Exception) -> None:
        if self._redis_failed_at is None:
            self._redis_warning(exc)
        self._redis_failed_at = time.monotonic()

    def _redis_warning(self, exc: Exception) -> None:
        raise NotImplementedError


class TwoLevelCache(RedisBackoff):
    """Memory LRU (thread-safe, ``spec.max_entries``) then Redis (``EX spec.ttl_seconds``).

    ``spec_source`` (optional) is asked for the current spec on every store and look-up, so an admin's change
    of TTL or size applies without a restart (the name, and so the metric label and Redis prefix, stay)."""

    def __init__(
        self,
        redis_client: redis.Redis | None,
        spec: CacheSpec,
        *,
        clock: Callable[[], float] = time.monotonic,
        key_prefix: str = "agentops:cache:",
        redis_retry_interval: float = 1.0,
        spec_source: Callable[[], CacheSpec] | None = None,
    ) -> None:
        self._spec = spec
        self._spec_source = spec_source
        self._redis = redis_client
        self._clock = clock
        self._prefix = f"{key_prefix}{spec.name}:"
        self._retry_interval = redis_retry_interval
        self._redis_failed_at: float | None = None
        self._memory: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()
        # Bound once: .labels() takes a lock and a dict lookup on every call.
        self._hit_memory = CACHE_REQUESTS.labels(cache=spec.name, result="hit_memory")
        self._hit_redis = CACHE_REQUESTS.labels(cache=spec.name, result="hit_redis")
        self._miss = CACHE_REQUESTS.labels(cache=spec.name, result="miss")
        # Background Redis writes (set(..., background=True)): a queue and its thread, per process.
        self._writes: queue.Queue = queue.Queue(maxsize=1000)
        self._writer_pid: int | None = None

    @property
    def spec(self) -> CacheSpec:
        """The current spec: the source's (when given and it answers), else the one built with."""
        if self._spec_source is not None:
            try:
                current = self._spec_source()
            except Exception:  # a config that cannot be read must not break a cache look-up
                logger.warning("cache %s: spec source failed; keeping the last spec", self._spec.name, exc_info=True)
            else:
                if current is not None and (current.ttl_seconds, current.max_entries) != (
                    self._spec.ttl_seconds,
                    self._spec.max_entries,
                ):
                    self._spec = CacheSpec(self._spec.name, current.ttl_seconds, current.max_entries)
        return self._spec

    def redis_key(self, key: str) -> str:
        return self._prefix + key

    def get(self, key: str) -> CacheHit | None:
        now = self._clock()
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                if entry[0] > now:
                    self._memory.move_to_end(key)
                else:
                    del self._memory[key]
                    entry = None
        if entry is not None:
            self._hit_memory.inc()
            return CacheHit(json.loads(entry[1]), "memory")

        raw, ttl_ms = self._redis_get(key)
        if raw is None:
            self._miss.inc()
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            logger.warning("cache %s: undecodable Redis entry for %s; ignored", self.spec.name, key)
            self._miss.inc()
            return None
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        ttl = self.spec.ttl_seconds if ttl_ms is None or ttl_ms < 0 else min(ttl_ms / 1000, self.spec.ttl_seconds)
        self._memory_put(key, text, now + ttl)
        self._hit_redis.inc()
        return CacheHit(value, "redis")

    def set(self, key: str, value: Any, *, background: bool = False) -> None:
        """Store a JSON-serialisable value at both levels (raises TypeError for anything else).

        ``background=True``: the memory level now, the Redis level by this process's writer thread (the
        caller does not wait for Redis; another process sees the entry shortly after). A full write queue
        falls back to writing inline."""
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        self._memory_put(key, text, self._clock() + self.spec.ttl_seconds)
        if not self._redis_usable():
            return
        if background:
            if self._writer_pid != os.getpid():
                self._start_writer()
            try:
                self._writes.put_nowait((self.redis_key(key), text, None))
                return
            except queue.Full:
                pass
        try:
            self._redis.set(self.redis_key(key), text, px=self._ttl_ms())
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
        else:
            self._redis_failed_at = None

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until the Redis writes queued by ``set(..., background=True)`` so far are done."""
        if self._writer_pid != os.getpid():
            return
        done = threading.Event()
        try:
            self._writes.put((None, None, done), timeout=timeout)
        except queue.Full:
            return
        done.wait(timeout)

    def delete(self, key: str) -> None:
        with self._lock:
            self._memory.pop(key, None)
        if self._redis_usable():
            try:
                self._redis.delete(self.redis_key(key))
            except REDIS_ERRORS as exc:
                self._redis_failed(exc)

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()

    def __len__(self) -> int:
        """Entries in this process's memory level (expired ones included until touched)."""
        return len(self._memory)

    # --- internals -------------------------------------------------------------------------------
    def _memory_put(self, key: str, text: str, expires_at: float) -> None:
        max_entries = self.spec.max_entries  # read outside the lock: a spec source may take its own
        with self._lock:
            self._memory[key] = (expires_at, text)
            self._memory.move_to_end(key)
            while len(self._memory) > max_entries:
                self._memory.popitem(last=False)

    def _ttl_ms(self) -> int:
        return max(1, int(self.spec.ttl_seconds * 1000))

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer_pid == os.getpid():
                return
            self._writes = queue.Queue(maxsize=self._writes.maxsize)  # a forked child must not share it
            thread = threading.Thread(
                target=self._write_behind, args=(self._writes,), name=f"agentops-cache-{self.spec.name}", daemon=True
            )
            thread.start()
            self._writer_pid = os.getpid()

    def _write_behind(self, q: queue.Queue) -> None:
        while True:
            batch = [q.get()]  # blocks while idle; then everything that piled up goes in one pipeline
            while len(batch) < 1000:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            writes = [item for item in batch if item[0] is not None]
            if writes and self._redis_usable():
                try:
                    pipe = self._redis.pipeline(transaction=False)
                    for redis_key, text, _ in writes:
                        pipe.set(redis_key, text, px=self._ttl_ms())
                    pipe.execute()
                except REDIS_ERRORS as exc:
                    self._redis_failed(exc)
                except Exception:  # never let the writer thread die
                    logger.exception("cache %s: background write failed", self.spec.name)
                else:
                    self._redis_failed_at = None
            for item in batch:
                if item[0] is None:
                    item[2].set()

    def _redis_get(self, key: str) -> tuple[Any, int | None]:
        if not self._redis_usable():
            return None, None
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.get(self.redis_key(key))
            pipe.pttl(self.redis_key(key))
            raw, ttl_ms = pipe.execute()
        except REDIS_ERRORS as exc:
            self._redis_failed(exc)
            return None, None
        self._redis_failed_at = None
        return raw, ttl_ms

    def _redis_warning(self, exc: Exception) -> None:
        logger.warning("cache %s: Redis error (%s); memory only for now", self.spec.name, exc)
