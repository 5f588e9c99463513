"""Which bus a config names."""

from __future__ import annotations

from weaver.config.schema import BusConfig
from weaver.session.bus import MemoryBus
from weaver.session.buses import make_bus
from weaver.session.redis_bus import RedisBus


def test_no_url_is_one_process_and_a_redis_url_is_redis() -> None:
    assert isinstance(make_bus(BusConfig()), MemoryBus)
    assert isinstance(make_bus(BusConfig(url="redis://127.0.0.1:1/0")), RedisBus)
