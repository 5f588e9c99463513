"""Which bus a config names: in-process, or Redis (session/bus.py, session/redis_bus.py)."""

from __future__ import annotations

from weaver.config.schema import BusConfig
from weaver.session.bus import Bus, MemoryBus
from weaver.session.redis_bus import RedisBus


def make_bus(config: BusConfig) -> Bus:
    """The bus ``config.url`` names (validated by the config loader)."""
    if config.is_redis:
        return RedisBus(config)
    return MemoryBus()
