"""The one set of display formatters: one function per idea, used by every presenter and, through
agentops/lib/display_tags.py, by every template. (healthchecks' hc/lib/date.py is the model.)

Every word they print is translated for the active language (English or 简体中文); numbers keep the same
digits in both: "," groups thousands and "." marks decimals, as Chinese readers of money and counts expect
too. Money is US dollars everywhere: "$1,234.56" in English, "US$1,234.56" in Chinese (a bare "$" there
reads as any dollar)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.utils.translation import gettext as _
from django.utils.translation import ngettext

DASH = "—"


def duration(seconds: float | None) -> str:
    """A measured duration, as precise as it is short: "840 ms", "12.5 s", "14 min 5 s", "3 h 20 min"."""
    if seconds is None:
        return DASH
    if seconds < 1:
        return _("%(ms)s ms") % {"ms": f"{seconds * 1000:.0f}"}
    if seconds < 120:
        return _("%(s)s s") % {"s": f"{seconds:.1f}"}
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 120:
        return _("%(min)s min %(s)s s") % {"min": minutes, "s": rest}
    return _("%(h)s h %(min)s min") % {"h": minutes // 60, "min": minutes % 60}


def age(seconds: float) -> str:
    """How long ago, coarsely, as a clock that keeps counting shows it: "42 s", "3 min", "2 h 5 min".
    static/js/review.js counts on from this text in the same format (its words from the djangojs catalog)."""
    seconds = int(abs(seconds))
    if seconds < 60:
        return _("%(s)s s") % {"s": seconds}
    if seconds < 3600:
        return _("%(min)s min") % {"min": seconds // 60}
    return _("%(h)s h %(min)s min") % {"h": seconds // 3600, "min": seconds % 3600 // 60}


def ago(seconds: float) -> str:
    """A moment in the past relative to now: "3 min ago" / "3 分钟前"."""
    return _("%(age)s ago") % {"age": age(seconds)}


def time_left(deadline: datetime, now: datetime) -> tuple[str, bool]:
    """Time left to a deadline as m:ss (h:mm:ss past an hour), "overdue …" once it has passed, and whether
    it has."""
    left = (deadline - now).total_seconds()
    hours, rest = divmod(int(abs(left)), 3600)
    minutes, seconds = divmod(rest, 60)
    clock = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
    return (_("overdue %(clock)s") % {"clock": clock} if left < 0 else clock), left < 0


def number(n: float | int | Decimal | None) -> str:
    """A count with thousands separators: "12,345" (the same digits in both languages)."""
    if n is None:
        return DASH
    return f"{n:,.0f}"


def tokens(n: float) -> str:
    """A token count with thousands separators: "12,345 tokens"."""
    count = round(n)
    return ngettext("%(n)s token", "%(n)s tokens", count) % {"n": number(n)}


def usd(value: float | Decimal | None, places: int | None = None) -> str:
    """US dollars with thousands separators: "$1,234.56" ("US$1,234.56" in Chinese). Without `places`, small
    amounts keep four decimals (a single call costs fractions of a cent) and amounts from $100 on two."""
    if value is None:
        return DASH
    if places is None:
        places = 4 if abs(value) < 100 else 2
    return _("$%(amount)s") % {"amount": f"{value:,.{places}f}"}


def usd_rate(value: Decimal) -> str:
    """A unit price exactly as stored, without trailing zeros: "$0.0025" ("US$0.0025")."""
    return _("$%(amount)s") % {"amount": format(value.normalize(), "f")}


def plain_decimal(value: Decimal | None) -> str | None:
    """A decimal as a plain string, never in exponent form ("0.00000001", not "1E-8")."""
    return None if value is None else format(value, "f")
