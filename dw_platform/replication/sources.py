"""The replication sources: `sources.yaml` (or the file in DW_REPLICATION_SOURCES) read into
`SourceConfig`s, `${VAR}` / `${VAR:default}` references resolved from the environment, and the
include/exclude table patterns.

A source's URL is resolved only when a connection is opened, so the secret it carries is never
part of the code location's definitions or logs.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_FILE = Path(__file__).with_name("sources.yaml")
ENGINES = ("postgresql", "oracle")
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::([^}]*))?\}")


class ConfigError(ValueError):
    """The sources file is wrong; the message names the source and the setting."""


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Replace `${VAR}` (required) and `${VAR:default}` with values from the environment."""
    env = os.environ if env is None else env

    def resolve(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set (referenced as ${{{name}}})")

    return _REFERENCE.sub(resolve, value)


@dataclass(frozen=True)
class SourceConfig:
    name: str
    engine: str
    url_template: str
    include: tuple[str, ...] = ("%",)
    exclude: tuple[str, ...] = ()
    slot: str = ""
    publication: str = ""
    publication_mode: str = "all_tables"
    tables_without_primary_key: str = "full"
    workers: int = 4
    table_attempts: int = 3
    retry_delay_s: float = 5.0
    file_size_mb: int = 256
    lock_timeout_s: float = 30.0
    long_columns: str = "error"  # Oracle: exclude | skip_table | error
    cdc_batch_changes: int = 50_000
    cdc_time_budget_s: float = 120.0
    lag_alert_mb: int = 64
    stale_after_minutes: float = 15.0
    stall_alert_minutes: float = 10.0
    log_retention_hours: float = 168.0
    heartbeat_after_mb: int = 16
    snapshot_retention_days: float = 7.0

    @property
    def url(self) -> str:
        """The connection URL with its references resolved (a secret: never log it)."""
        return interpolate(self.url_template)

    @property
    def namespace(self) -> tuple[str, str]:
        """The source's Iceberg namespace: bronze.<name>."""
        return ("bronze", self.name)

    def selects(self, schema: str, table: str) -> bool:
        """Whether the include/exclude patterns select `schema.table`."""
        return any(_matches(p, schema, table) for p in self.include) and not any(
            _matches(p, schema, table) for p in self.exclude
        )


def _matches(pattern: str, schema: str, table: str) -> bool:
    subject = f"{schema}.{table}" if "." in pattern else table
    return like_regex(pattern).fullmatch(subject) is not None


@functools.lru_cache(maxsize=1024)
def like_regex(pattern: str) -> re.Pattern:
    """A SQL LIKE pattern as a case-insensitive regex: `%` any run, `_` one character, `\\` escapes."""
    out, chars = [], iter(pattern)
    for ch in chars:
        if ch == "\\":
            out.append(re.escape(next(chars, "\\")))
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


_CHOICES = {
    "engine": ENGINES,
    "publication_mode": ("all_tables", "existing"),
    "tables_without_primary_key": ("full", "skip"),
    "long_columns": ("exclude", "skip_table", "error"),
}
_NUMBERS = {
    "workers": int,
    "table_attempts": int,
    "file_size_mb": int,
    "retry_delay_s": float,
    "lock_timeout_s": float,
    "cdc_batch_changes": int,
    "cdc_time_budget_s": float,
    "lag_alert_mb": int,
    "stale_after_minutes": float,
    "stall_alert_minutes": float,
    "log_retention_hours": float,
    "heartbeat_after_mb": int,
    "snapshot_retention_days": float,
}


def parse_sources(document: dict, env: dict[str, str] | None = None) -> dict[str, SourceConfig]:
    """`SourceConfig`s from a parsed sources file; every setting but the URL resolved now."""
    sources = (document or {}).get("sources") or {}
    if not isinstance(sources, dict) or not sources:
        raise ConfigError("the sources file has no `sources:` mapping")
    parsed = {}
    for name, raw in sources.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ConfigError(f"source name {name!r}: use lowercase letters, digits and _ (it names a namespace)")
        raw = dict(raw or {})
        if "url" not in raw:
            raise ConfigError(f"source {name}: `url` is missing")
        values: dict = {"name": name, "url_template": str(raw.pop("url"))}
        for key, value in raw.items():
            if key not in SourceConfig.__dataclass_fields__ or key in ("name", "url_template"):
                raise ConfigError(f"source {name}: unknown setting {key!r}")
            try:
                if key in ("include", "exclude"):
                    values[key] = tuple(interpolate(str(v), env) for v in (value or []))
                else:
                    text = interpolate(str(value), env)
                    values[key] = _NUMBERS[key](text) if key in _NUMBERS else text
            except ValueError as exc:
                raise ConfigError(f"source {name}, setting {key}: {exc}") from None
            if key in _CHOICES and values[key] not in _CHOICES[key]:
                raise ConfigError(f"source {name}, setting {key}: {values[key]!r} is not one of {_CHOICES[key]}")
        values.setdefault("engine", "postgresql")
        values.setdefault("slot", f"dw_{name}")
        values.setdefault("publication", f"dw_{name}")
        parsed[name] = SourceConfig(**values)
    return parsed


def load_sources(path: Path | None = None) -> dict[str, SourceConfig]:
    path = Path(path or os.environ.get("DW_REPLICATION_SOURCES") or DEFAULT_FILE)
    return parse_sources(yaml.safe_load(path.read_text()))
