"""Per-process facts exported as metrics."""

from __future__ import annotations

import os
import resource

from agentops.observability import metrics

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def update_memory_gauge() -> None:
    metrics.MEMORY_BYTES.set(resident_memory_bytes())
