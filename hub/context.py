"""The hub's shared parts, built once per process from settings and closed together."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from arq.connections import ArqRedis

from channels.base import Channel, load_channel_class
from hub import queue as queue_mod
from hub.ratelimit import RedisPacer
from hub.render import Renderer
from hub.settings import Settings
from hub.store.db import Database


@dataclass
class Hub:
    settings: Settings
    db: Database
    renderer: Renderer
    secret: bytes
    redis: ArqRedis | None = None
    channels: dict[str, Channel] = field(default_factory=dict)
    #: Urgent-lane instances of the channels that want one (see ``Channel.instance_per_lane``).
    urgent_channels: dict[str, Channel] = field(default_factory=dict)
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

    def channel(self, name: str) -> Channel:
        try:
            return self.channels[name]
        except KeyError:
            enabled = ", ".join(sorted(self.channels)) or "none"
            raise ValueError(f"channel {name!r} is not enabled (enabled: {enabled})") from None

    async def open_channel(self, name: str, lane: str = "bulk") -> Channel:
        """The opened adapter for a lane: the urgent lane has its own connections where it can."""
        channel = self.channel(name)
        if lane == "urgent" and type(channel).instance_per_lane and name in self.settings.enabled_channels():
            if name not in self.urgent_channels:
                conf = self.settings.enabled_channels()[name]
                self.urgent_channels[name] = type(channel).from_settings(
                    conf, public_url=self.settings.hub.public_url
                )
            channel = self.urgent_channels[name]
        if not any(c is channel for c in self._opened):
            await channel.open()
            self._opened.append(channel)
        return channel

    async def close(self) -> None:
        for channel in self._opened:
            await channel.close()
        self._opened.clear()
        if self.redis is not None:
            await self.redis.aclose()
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
    )
    secret = await db.secret_key(settings.hub.secret_key)
    hub = Hub(settings=settings, db=db, renderer=Renderer(settings.hub.templates_dir), secret=secret)
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
