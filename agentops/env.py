"""Typed environment helpers for settings.py: every bad value fails loudly, naming the variable.

No Django import: settings.py imports this before Django is configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


class EnvError(ValueError):
    """A configuration variable has a value we cannot use. The message names the variable."""


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    return (os.environ if environ is None else environ).get(name)


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    value = _raw(name, environ)
    return default if value is None else value.strip()


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, environ)
    if value is None:
        return default
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise EnvError(f"{name}={value!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off")


def env_int(
    name: str,
    default: int,
    environ: Mapping[str, str] | None = None,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = _raw(name, environ)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise EnvError(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise EnvError(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise EnvError(f"{name}={number} is above the maximum {maximum}")
    return number


def env_float(name: str, default: float, environ: Mapping[str, str] | None = None, *, minimum: float = 0.0) -> float:
    value = _raw(name, environ)
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value.strip())
    except ValueError:
        raise EnvError(f"{name}={value!r} is not a number") from None
    if number < minimum:
        raise EnvError(f"{name}={number} is below the minimum {minimum}")
    return number


def env_list(name: str, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret(name: str, environ: Mapping[str, str] | None = None, *, required: bool, min_length: int = 32) -> str:
    """A secret: required (and long enough) unless `required` is False, where a missing one gives ""."""
    value = _raw(name, environ)
    if value is None or value.strip() == "":
        if required:
            raise EnvError(f"{name} must be set (a random string of at least {min_length} characters)")
        return ""
    if len(value.strip()) < min_length:
        raise EnvError(f"{name} is too short: use at least {min_length} random characters")
    return value.strip()
