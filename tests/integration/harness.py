"""A real origin and a real Weaver on 127.0.0.1, for integration tests."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.servers import Handler, serve_app
from weaver.cache.clock import SYSTEM_CLOCK, Clock
from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy.app import build_app
from weaver.proxy.edge import EDGE_KEY


@dataclass
class Recorder:
    """What the origin saw: each path requested, its headers, and the ones cancelled."""

    requests: list[str] = field(default_factory=list)
    headers: dict[str, Mapping[str, str]] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


def recording(recorder: Recorder, handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        recorder.requests.append(request.path_qs)
        recorder.headers[request.path_qs] = dict(request.headers)
        try:
            response: web.StreamResponse = await handler(request)
        except BaseException:
            recorder.cancelled.append(request.path_qs)
            raise
        recorder.finished.append(request.path_qs)
        return response

    return wrapped


def html(text: str, **headers: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers=headers)


TOKEN = "test-publish-token"


def weaver_config(
    origin_url: str, cache_dir: str, *, server: object = None, **route: object
) -> Config:
    route_table: dict[str, object] = {"path": "/", "origin": "shop", "fragment_timeout": "2s"}
    route_table.update(route)
    return build_config(
        {
            "server": dict(server) if isinstance(server, Mapping) else {},
            "session": {"publish_token": TOKEN, "secret": "test-secret", "listen": "127.0.0.1:0"},
            "cache": {"dir": cache_dir},
            "origin": [{"name": "shop", "url": origin_url}],
            "route": [route_table],
        },
        "<test>",
    )


@dataclass
class Stack:
    """A running origin with Weaver in front of it."""

    url: str
    origin_url: str
    cache_dir: str
    config: Config
    app: web.Application

    @property
    def session_url(self) -> str:
        hub = self.app[EDGE_KEY].hub
        assert hub is not None
        return f"ws://127.0.0.1:{hub.port}/"


@asynccontextmanager
async def weaver_stack(
    routes: Mapping[str, Handler],
    recorder: Recorder | None = None,
    *,
    server: object = None,  # a Mapping of [server] settings (object: **route passes through)
    clock: object = SYSTEM_CLOCK,  # a Clock (object: **route passes through)
    **route: object,
) -> AsyncIterator[Stack]:
    """Start an origin serving ``routes`` (any method) and Weaver in front of it.

    ``clock``: Weaver's clock; pass a ManualClock and advance it to expire entries.
    """
    origin = web.Application()
    rec = recorder if recorder is not None else Recorder()
    for path, handler in routes.items():
        origin.router.add_route("*", path, recording(rec, handler))
    with tempfile.TemporaryDirectory(prefix="weaver-cache-") as cache_dir:
        async with serve_app(origin) as origin_url:
            config = weaver_config(origin_url, cache_dir, server=server, **route)
            assert isinstance(clock, Clock)
            app = build_app(config, clock=clock)
            async with serve_app(app) as weaver_url:
                yield Stack(weaver_url, origin_url, cache_dir, config, app)


@asynccontextmanager
async def weaver_in_front_of(
    routes: Mapping[str, Handler], recorder: Recorder | None = None, **route: object
) -> AsyncIterator[str]:
    """Start an origin serving ``routes`` and Weaver in front of it; yield Weaver's URL."""
    async with weaver_stack(routes, recorder, **route) as stack:
        yield stack.url
