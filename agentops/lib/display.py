"""The one set of display formatters: one function per idea, used by every presenter and, through
agentops/lib/display_tags.py, by every template. (healthchecks' hc/lib/date.py is the model.)"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

DASH = "—"


def duration(seconds: float | None) -> str:
    """A measured duration, as precise as it is short: "840 ms", "12.5 s", "14 min 5 s", "3 h 20 min"."""
    if seconds is None:
        return DASH
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def age(seconds: float) -> str:
    """How long ago, coarsely, as a clock that keeps counting shows it: "42 s", "3 min", "2 h 5 min".
    static/js/review.js counts on from this text in the same format."""
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def time_left(deadline: datetime, now: datetime) -> tuple[str, bool]:
    """Time left to a deadline as m:ss (h:mm:ss past an hour), "overdue …" once it has passed, and whether
    it has."""
    left = (deadline - now).total_seconds()
    hours, rest = divmod(int(abs(left)), 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    return (f"overdue {clock}" if left < 0 else clock), left < 0


def tokens(n: float) -> str:
    """A token count with thousands separators: "12,345 tokens"."""
    return f"{n:,.0f} tokens"


def plain_decimal(value: Decimal | None) -> str | None:
    """A decimal as a plain string, never in exponent form ("0.00000001", not "1E-8")."""
    return None if value is None else format(value, "f")
