"""The hub's shared parts, built once per process from settings and closed together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis

from channels.base import Channel, load_channel_class
from hub import queue as queue_mod
from hub.errors import InvalidInput
from hub.logs import redact_values
from hub.ratelimit import RedisPacer, shared_count
from hub.render import Renderer
from hub.settings import Settings
from hub.store.db import Database


class ChannelNotHere(RuntimeError):
    """This process may not open the channel (its session belongs to the worker processes)."""


@dataclass
class Hub:
    settings: Settings
    db: Database
    renderer: Renderer
    #: The deployment key: signs links and hashes PINs and API keys (``Database.keyring``).
    secret: bytes
    redis: ArqRedis | None = None
    #: Keys from before ``hub secret rotate``: accepted to verify, never used to sign or hash.
    previous_secrets: tuple[bytes, ...] = ()
    channels: dict[str, Channel] = field(default_factory=dict)
    #: Urgent-lane instances of the channels that want one (``Capabilities.instance_per_lane``).
    urgent_channels: dict[str, Channel] = field(default_factory=dict)
    #: ``api`` in a process that only serves the HTTP API: it never opens a channel whose session
    #: belongs to workers (``Capabilities.worker_only``, a Matrix device), so it cannot take it over.
    role: str = "any"
    #: Made once per database (``hub init``); names this installation on a shared Redis.
    installation_id: str = ""
    _opened: list[Channel] = field(default_factory=list)

    @property
    def queue(self) -> queue_mod.Queue:
        if self.redis is None:
            raise RuntimeError("this hub was built without Redis")
        return queue_mod.Queue(self.redis, self.settings.redis.key_prefix)

    @property
    def pacer(self) -> RedisPacer:
        if self.redis is None:
            raise RuntimeError("this hub was built without Redis")
        return RedisPacer(self.redis, self.settings.redis.key_prefix)

    @property
    def verification_keys(self) -> tuple[bytes, ...]:
        """The current key first, then the previous ones: what a PIN, API key or link may be checked with."""
        return (self.secret, *self.previous_secrets)

    def listeners(self, *where: str) -> list[str]:
        """Channels whose inbound is pulled in this kind of process: ``worker`` and/or ``listener``."""
        return [name for name, c in self.channels.items() if c.capabilities.listening in where]

    def channel(self, name: str) -> Channel:
        try:
            return self.channels[name]
        except KeyError:
            enabled = ", ".join(sorted(self.channels)) or "none"
            raise InvalidInput(f"channel {name!r} is not enabled (enabled: {enabled})") from None

    async def open_channel(self, name: str, lane: str = "bulk") -> Channel:
        """The opened adapter for a lane: the urgent lane has its own connections where it can."""
        channel = self.channel(name)
        if channel.capabilities.worker_only and self.role == "api":
            raise ChannelNotHere(f"channel {name!r} is opened by workers only, never by an API process")
        own_instance = channel.capabilities.instance_per_lane and name in self.settings.enabled_channels()
        if lane == "urgent" and own_instance:
            if name not in self.urgent_channels:
                conf = self.settings.enabled_channels()[name]
                self.urgent_channels[name] = type(channel).from_settings(
                    conf, public_url=self.settings.hub.public_url
                )
            channel = self.urgent_channels[name]
        if not any(c is channel for c in self._opened):
            if self.redis is not None:
                count = shared_count(self.redis, self.settings.redis.key_prefix, self.secret)
                channel.use_shared_limits(count)
            await channel.open()
            self._opened.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self._opened:
            await channel.close()
        self._opened.clear()
        if self.redis is not None:
            await self.redis.aclose(close_connection_pool=True)
            queue_mod.stop_embedded()  # the embedded Redis ends with the hub that started it
        await self.db.dispose()


async def build_hub(
    settings: Settings,
    *,
    with_redis: bool = True,
    schema: str | None = None,
    extra_channels: dict[str, Channel] | None = None,
) -> Hub:
    db = Database(
        settings.database.url,
        echo=settings.database.echo,
        schema=schema or settings.database.schema_name or None,
        jobs=settings.queue.urgent_jobs + settings.queue.bulk_jobs,
    )
    try:
        keyring = await db.keyring(settings.hub)
    except BaseException:
        await db.dispose()
        raise
    redact_values(*(key.decode() for key in keyring.verifying))  # a key file's keys are as secret
    installation_id = await db.installation_id()
    if not settings.redis.key_prefix:  # default: a namespace of this installation's own
        redis_section = settings.redis.model_copy(
            update={"key_prefix": queue_mod.default_prefix(installation_id)}
        )
        settings = settings.model_copy(update={"redis": redis_section})
    hub = Hub(
        settings=settings,
        db=db,
        renderer=Renderer(settings.hub.templates_dir),
        secret=keyring.current,
        previous_secrets=keyring.previous,
    )
    hub.installation_id = installation_id
    hub.channels = load_channels(settings)
    hub.channels.update(extra_channels or {})
    if with_redis:
        hub.redis = await queue_mod.connect(settings.redis)
    return hub


def load_channels(settings: Settings) -> dict[str, Channel]:
    channels: dict[str, Any] = {}
    for name, conf in settings.enabled_channels().items():
        channels[name] = load_channel_class(name).from_settings(conf, public_url=settings.hub.public_url)
    return channels
