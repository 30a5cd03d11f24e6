"""Typed readers for environment variables.

Every setting of MatrixCloud comes from the environment through these helpers, so a
bad value fails at start with a message that names the variable, never as a silent
default (Healthchecks' settings style). Secrets also honour ``<NAME>_FILE``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

TRUTHY = frozenset({"1", "true", "yes", "on", "enabled"})
FALSY = frozenset({"0", "false", "no", "off", "disabled"})


def _raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    value = (environ if environ is not None else os.environ).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_first(*names: str) -> tuple[str, str] | tuple[None, None]:
    """The first of ``names`` that is set and non-empty, as ``(name, value)``."""
    for name in names:
        value = _raw(name)
        if value is not None:
            return name, value
    return None, None


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in TRUTHY:
        return True
    if lowered in FALSY:
        return False
    raise ImproperlyConfigured(
        f"{name}={value!r} is not a boolean (use one of {sorted(TRUTHY | FALSY)})"
    )


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name}={number} is above the maximum {maximum}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} is below the minimum {minimum}")
    return number


def env_choice(name: str, choices: Iterable[str], default: str) -> str:
    allowed = tuple(choices)
    value = _raw(name)
    if value is None:
        return default
    if value not in allowed:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(allowed)}")
    return value


def env_list(name: str, default: Iterable[str] = ()) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    value = _raw(name)
    return (Path(value).expanduser() if value is not None else default).absolute()


def env_secret(name: str, default: str = "") -> str:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE``."""
    value = _raw(name)
    file_name = _raw(f"{name}_FILE")
    if value is not None and file_name is not None:
        raise ImproperlyConfigured(f"set only one of {name} and {name}_FILE")
    if file_name is not None:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE: cannot read {file_name}: {exc}") from exc
    return default if value is None else value


def database_config(url: str, *, source: str, schema: str = "") -> dict[str, object]:
    """Django DATABASES entry for a ``postgres://`` (or ``postgresql://``) URL."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ImproperlyConfigured(
            f"{source}: only PostgreSQL URLs are supported (got scheme {parts.scheme!r})"
        )
    name = unquote(parts.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured(f"{source}: the URL names no database")
    options: dict[str, object] = dict(parse_qsl(parts.query))
    # An unreachable host must fail in seconds, not after the OS's TCP timeout.
    options.setdefault("connect_timeout", "5")
    if schema:
        if not schema.replace("_", "").isalnum():
            raise ImproperlyConfigured(f"MATRIXCLOUD_DB_SCHEMA={schema!r} is not a plain name")
        options["options"] = f"-c search_path={schema},public"
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
    }
