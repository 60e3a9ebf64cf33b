"""Settings: one frozen object built once from the environment.

Nothing else in taskflow reads `os.environ`. A bad value raises `ConfigError` whose
message names the variable, and `taskflow serve` prints that one line and exits 2.
"""

from __future__ import annotations

import enum
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from aiohttp import web

from taskflow.errors import ConfigError

DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
LOG_FORMATS = ("json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
AMQP_QUEUE_TYPES = ("classic", "quorum")
MAX_DURATION_S = 100 * 365 * 86_400

_DURATION = re.compile(r"(?P<count>\d{1,12})(?P<unit>[smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}

T = TypeVar("T")

# RFC 6750's `b64token`: what a client can send after `Authorization: Bearer`.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

# libpq and asyncpg also take the password as a query parameter.
_QUERY_PASSWORD = re.compile(r"(?i)([?&]password=)[^&#]*")
_QUERY_PASSWORD_VALUE = re.compile(r"(?i)[?&]password=([^&#]+)")


def mask_url(url: str | None) -> str | None:
    """Return `url` with its password (in the user part or a `password=` query) as `***`."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is not None:
        netloc = parts.netloc.rsplit("@", 1)[1]
        url = urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{netloc}"))
    return _QUERY_PASSWORD.sub(r"\1***", url)


class Role(enum.StrEnum):
    """What a token may do: `read` ⊂ `write` ⊂ `admin` (the contract's Security section)."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"

    def grants(self, needed: Role) -> bool:
        """True when a token of this role may do what `needed` allows."""
        return _RANKS[self] >= _RANKS[needed]


_RANKS = {Role.READ: 1, Role.WRITE: 2, Role.ADMIN: 3}


def url_secrets(url: str | None) -> list[str]:
    """The password of `url` (user part and `password=` query), as written and decoded."""
    if not url:
        return []
    found: list[str] = []
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    if password:
        found += [password, unquote(password)]
    for match in _QUERY_PASSWORD_VALUE.finditer(url):
        found += [match.group(1), unquote(match.group(1))]
    return [secret for secret in dict.fromkeys(found) if secret]


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything taskflow can be told through the environment (see the README's table)."""

    database_url: str | None = None
    amqp_url: str = DEFAULT_AMQP_URL
    host: str = "127.0.0.1"
    port: int = 8000
    processors: int = 1_000
    queue_size: int = 10_000
    work_min_s: float = 5.0
    work_max_s: float = 10.0
    failure_rate: float = 0.1
    lease_s: float = 30.0
    amqp_queue: str = "tasks"
    log_format: str = "console"
    log_level: str = "info"
    data_dir: Path = field(default_factory=lambda: Path(".taskflow/postgres"))
    shutdown_grace_s: float = 10.0
    amqp_queue_type: str = "classic"
    db_pool_size: int = 10
    listen_database_url: str | None = None
    retention_s: int = 7 * 86_400
    # Secrets: never in repr() nor in `public()`.
    api_tokens: tuple[tuple[Role, str], ...] = field(default=(), repr=False)
    metrics_token: str | None = field(default=None, repr=False)
    client_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default `os.environ`); raise `ConfigError` on a bad value."""
        env = os.environ if env is None else env
        d = cls()
        reader = _Reader(env)
        port_var = "TASKFLOW_PORT" if env.get("TASKFLOW_PORT", "").strip() else "PORT"
        settings = cls(
            database_url=reader.url("DATABASE_URL", ("postgres", "postgresql"), None),
            amqp_url=reader.url("AMQP_URL", ("amqp", "amqps"), DEFAULT_AMQP_URL) or "",
            host=reader.text("TASKFLOW_HOST", d.host),
            port=reader.number(port_var, int, d.port, 1, 65535),
            processors=reader.number("TASKFLOW_PROCESSORS", int, d.processors, 1, 100_000),
            queue_size=reader.number("TASKFLOW_QUEUE_SIZE", int, d.queue_size, 1, 10_000_000),
            work_min_s=reader.number("TASKFLOW_WORK_MIN_S", float, d.work_min_s, 0, 86_400),
            work_max_s=reader.number("TASKFLOW_WORK_MAX_S", float, d.work_max_s, 0, 86_400),
            failure_rate=reader.number("TASKFLOW_FAILURE_RATE", float, d.failure_rate, 0, 1),
            lease_s=reader.number("TASKFLOW_LEASE_S", float, d.lease_s, 1, 86_400),
            amqp_queue=reader.text("TASKFLOW_AMQP_QUEUE", d.amqp_queue),
            log_format=reader.choice("TASKFLOW_LOG_FORMAT", LOG_FORMATS, d.log_format),
            log_level=reader.choice("TASKFLOW_LOG_LEVEL", LOG_LEVELS, d.log_level),
            data_dir=Path(reader.text("TASKFLOW_DATA_DIR", ".taskflow/postgres")),
            shutdown_grace_s=reader.number(
                "TASKFLOW_SHUTDOWN_GRACE_S", float, d.shutdown_grace_s, 0, 3600
            ),
            amqp_queue_type=reader.choice(
                "TASKFLOW_AMQP_QUEUE_TYPE", AMQP_QUEUE_TYPES, d.amqp_queue_type
            ),
            db_pool_size=reader.number("TASKFLOW_DB_POOL_SIZE", int, d.db_pool_size, 1, 1000),
            listen_database_url=reader.url(
                "TASKFLOW_LISTEN_DATABASE_URL", ("postgres", "postgresql"), None
            ),
            retention_s=reader.duration("TASKFLOW_RETENTION", d.retention_s),
            api_tokens=reader.api_tokens("TASKFLOW_API_TOKENS", "TASKFLOW_API_TOKENS_FILE"),
            metrics_token=reader.token("TASKFLOW_METRICS_TOKEN"),
            client_token=reader.token("TASKFLOW_TOKEN"),
        )
        if settings.work_min_s > settings.work_max_s:
            raise ConfigError(
                f"TASKFLOW_WORK_MIN_S={settings.work_min_s} is greater than "
                f"TASKFLOW_WORK_MAX_S={settings.work_max_s}"
            )
        if settings.listen_database_url and not settings.database_url:
            raise ConfigError(
                "TASKFLOW_LISTEN_DATABASE_URL is set but DATABASE_URL is not: the LISTEN "
                "connection goes to the same database as the pool"
            )
        return settings

    def public(self) -> dict[str, object]:
        """The settings as a dict for logs, with passwords in URLs masked."""
        out: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["database_url"] = mask_url(self.database_url) or "embedded"
        out["amqp_url"] = mask_url(self.amqp_url)
        out["listen_database_url"] = mask_url(self.listen_database_url) or "DATABASE_URL"
        out["data_dir"] = str(self.data_dir)
        roles = [role for role, _ in self.api_tokens]
        out["api_tokens"] = {role.value: roles.count(role) for role in Role if role in roles}
        out["metrics_token"] = "***" if self.metrics_token else None
        out["client_token"] = "***" if self.client_token else None
        return out

    def secrets(self) -> list[str]:
        """Every secret these settings hold (URL passwords, tokens), for log redaction."""
        found = [token for _, token in self.api_tokens]
        found += [t for t in (self.metrics_token, self.client_token) if t]
        for url in (self.database_url, self.amqp_url, self.listen_database_url):
            found += url_secrets(url)
        return found


class _Reader:
    """Reads typed values from an environment mapping, naming the variable on error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        raw = self._raw(name)
        if raw is None:
            return default
        if raw.lower() not in allowed:
            raise ConfigError(f"{name}={raw!r} is not one of {', '.join(allowed)}")
        return raw.lower()

    def number(self, name: str, kind: Callable[[str], T], default: T, low: float, high: float) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ConfigError(f"{name}={raw!r} is not {noun}") from None
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number) or not low <= number <= high:
            raise ConfigError(f"{name}={raw!r} is out of range [{low:g}, {high:g}]")
        return value

    def duration(self, name: str, default: int) -> int:
        """Whole seconds from `90s`, `15m`, `12h`, `7d`, or `0` (which means "never")."""
        raw = self._raw(name)
        if raw is None:
            return default
        if raw == "0":
            return 0
        match = _DURATION.fullmatch(raw.lower())
        if match is None:
            raise ConfigError(
                f"{name}={raw!r} is not a duration: write a whole number and a unit, "
                "e.g. 90s, 15m, 12h or 7d (or 0 to keep everything)"
            )
        seconds = int(match["count"]) * _UNIT_S[match["unit"]]
        if seconds == 0:
            raise ConfigError(f"{name}={raw!r} is empty: write 0 to keep everything")
        if seconds > MAX_DURATION_S:
            raise ConfigError(f"{name}={raw!r} is out of range [1s, {MAX_DURATION_S // 86_400}d]")
        return seconds

    def url(self, name: str, schemes: tuple[str, ...], default: str | None) -> str | None:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            # urllib's message may quote a piece of the password: do not repeat it.
            raise ConfigError(
                f"{name} is not a valid URL: bad host or port "
                "(characters such as / @ : in the password must be percent-encoded)"
            ) from None
        if parts.scheme not in schemes:
            raise ConfigError(
                f"{name} must start with {' or '.join(s + '://' for s in schemes)}, "
                f"got {mask_url(raw)!r}"
            )
        return raw

    def token(self, name: str) -> str | None:
        """One bearer token (RFC 6750 syntax), or None when unset."""
        raw = self._raw(name)
        if raw is not None and not _BEARER_TOKEN.fullmatch(raw):
            raise ConfigError(
                f"{name} is not a valid bearer token (letters, digits and -._~+/ then any =)"
            )
        return raw

    def api_tokens(self, name: str, file_name: str) -> tuple[tuple[Role, str], ...]:
        """`ROLE:TOKEN` entries, comma-separated in `name` or one a line in the file `file_name`.

        Errors name the variable and the entry (or line) but never quote a token.
        """
        text, path = self._raw(name), self._raw(file_name)
        if text is not None and path is not None:
            raise ConfigError(f"{name} and {file_name} are both set: use one of them")
        if path is not None:
            try:
                lines = Path(path).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
                raise ConfigError(f"{file_name}: cannot read {path}: {reason}") from None
            entries = [
                (f"{file_name}: {path} line {number}", line.strip())
                for number, line in enumerate(lines, start=1)
                if line.strip() and not line.strip().startswith("#")
            ]
            if not entries:
                raise ConfigError(f"{file_name}: {path} has no ROLE:TOKEN entry")
        elif text is not None:
            entries = [
                (f"{name}: entry {number}", entry.strip())
                for number, entry in enumerate(text.split(","), start=1)
            ]
        else:
            return ()
        roles: dict[str, Role] = {}
        for where, entry in entries:
            role_name, colon, token = entry.partition(":")
            token = token.strip()
            if not colon:
                raise ConfigError(f"{where} is not ROLE:TOKEN")
            try:
                role = Role(role_name.strip().lower())
            except ValueError:
                raise ConfigError(
                    f"{where} has an unknown role {role_name.strip()[:20]!r} "
                    f"(one of {', '.join(Role)})"
                ) from None
            if not token:
                raise ConfigError(f"{where} has an empty token")
            if not _BEARER_TOKEN.fullmatch(token):
                raise ConfigError(
                    f"{where} is not a valid bearer token (letters, digits and -._~+/ then any =)"
                )
            if roles.setdefault(token, role) is not role:
                raise ConfigError(f"{where} repeats a token given another role before")
        return tuple((role, token) for token, role in roles.items())


SETTINGS = web.AppKey("settings", Settings)
