"""What every request handler shares: the config, the origin client, the store, the fills."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from weaver.cache.clock import SYSTEM_CLOCK, Clock
from weaver.cache.fills import Fills
from weaver.cache.store import Store
from weaver.config.schema import Config
from weaver.proxy.hitlane import HitLane
from weaver.proxy.origin import OriginClient
from weaver.session.hub import SessionHub


@dataclass(slots=True)
class Edge:
    """The long-lived parts of one Weaver process, built and closed by the app."""

    config: Config
    client: OriginClient
    store: Store | None
    fills: Fills
    hub: SessionHub | None = None
    lane: HitLane | None = None  # recorded answers for plain, fresh, hot hits
    clock: Clock = SYSTEM_CLOCK  # the one clock of the app: ages, freshness, expiry


EDGE_KEY = web.AppKey("edge", Edge)
