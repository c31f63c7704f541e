"""Call durations for the adaptive timeouts, recorded off the hot path in batches."""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)


class LatencyRecorder:
    """Feeds call durations to ``AdaptiveTimeouts`` off the hot path, in batches.

    ``background=True``: samples go through a bounded queue to one daemon thread per process (started
    lazily, restarted after a fork), so a guarded call never waits on Redis for it; a full queue drops the
    sample. The thread writes at most once per ``interval`` seconds (sooner when ``batch_size`` samples are
    waiting or on ``flush()``): everything queued goes to ``adaptive.record_many(samples)`` — one pipelined
    round trip — when it exists, else to ``record`` one by one. A busy process thus costs Redis (and its own
    GIL) a handful of writes a second instead of one per call; the samples reach Redis at most ``interval``
    late, well within the adaptive timeout's own 1 s in-process cache. ``background=False`` records inline
    (tests, scripts). ``flush()`` waits until every sample queued before it is written.
    """

    def __init__(
        self,
        adaptive: Any,
        *,
        background: bool = True,
        maxsize: int = 10000,
        interval: float = 0.1,
        batch_size: int = 500,
    ) -> None:
        self.adaptive = adaptive
        self.background = background
        self.interval = interval
        self.batch_size = batch_size
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._wake = threading.Event()
        self._pid: int | None = None
        self._lock = threading.Lock()

    def record(self, operation: str, model: str, seconds: float) -> None:
        if not self.background:
            self.adaptive.record(operation, model, seconds)
            return
        if self._pid != os.getpid():
            self._start()
        q = self._queue
        try:
            q.put_nowait((operation, model, seconds))
        except queue.Full:
            return
        if q.qsize() >= self.batch_size:
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> None:
        if not self.background or self._pid != os.getpid():
            return
        done = threading.Event()
        try:
            self._queue.put((None, None, done), timeout=timeout)
        except queue.Full:
            return
        self._wake.set()
        done.wait(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._queue = queue.Queue(maxsize=self._queue.maxsize)  # a forked child must not share them
            self._wake = threading.Event()
            thread = threading.Thread(
                target=self._run, args=(self._queue, self._wake), name="agentops-latency", daemon=True
            )
            thread.start()
            self._pid = os.getpid()

    def _run(self, q: queue.Queue, wake: threading.Event) -> None:
        record_many = getattr(self.adaptive, "record_many", None)
        last_write = -math.inf
        while True:
            batch = [q.get()]  # blocks while the process is idle
            if batch[0][0] is not None:  # a sample: let more pile up until `interval` after the last write
                delay = last_write + self.interval - time.monotonic()
                if delay > 0:
                    wake.wait(delay)
            wake.clear()
            while len(batch) < 20000:  # bounded even if callers keep up with the draining
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            samples = [item for item in batch if item[0] is not None]
            try:
                if record_many is not None:
                    if samples:
                        record_many(samples)
                else:
                    for operation, model, seconds in samples:
                        self.adaptive.record(operation, model, seconds)
            except Exception:  # never let the recorder thread die
                logger.exception("latency recorder: record failed")
            last_write = time.monotonic()
            for item in batch:
                if item[0] is None:
                    item[2].set()
