"""One serving process (proxy/node.py): a Node started, reloaded and stopped in this
process, then SIGTERM drains and SIGHUP reloads in ``weaver serve`` as a real process."""

from __future__ import annotations

import asyncio
import signal
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.integration.harness import html
from tests.integration.ops_harness import weaver_serve
from tests.servers import serve_app
from weaver.config.load import build_config
from weaver.config.schema import Config, HostPort
from weaver.proxy.node import ListenError, Node, open_listener
from weaver.proxy.tls import TlsError


def _node_config(cache_dir: str, origin_url: str, port: int = 0, **server: object) -> Config:
    return build_config(
        {
            "server": {"listen": f"127.0.0.1:{port}", **server},
            "session": {"listen": "127.0.0.1:0", "secret": "s" * 32},
            "cache": {"dir": cache_dir},
            "origin": [{"name": "o", "url": origin_url}],
            "route": [{"path": "/", "origin": "o"}],
        },
        "<test>",
    )


def _answering(
    text: str, hold: asyncio.Event | None = None, arrived: asyncio.Event | None = None
) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        if hold is not None and arrived is not None and request.path == "/slow":
            arrived.set()
            await hold.wait()
        return html(text)

    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    return app


@asynccontextmanager
async def _node(config: Config) -> AsyncIterator[Node]:
    node = Node(config)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def _text(client: aiohttp.ClientSession, url: str) -> str:
    async with client.get(url) as resp:
        return await resp.text()


def test_a_busy_address_is_refused_naming_it_and_its_config_key() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(
            ListenError, match=rf"cannot listen on 127\.0\.0\.1:{port} \(server\.listen\)"
        ):
            open_listener(HostPort("127.0.0.1", port), key="server.listen", reuse_port=False)


async def test_a_node_serves_reloads_on_the_same_port_and_finishes_what_was_in_flight() -> None:
    hold, arrived = asyncio.Event(), asyncio.Event()
    with tempfile.TemporaryDirectory() as cache_dir:
        async with (
            asyncio.timeout(20),
            serve_app(_answering("old", hold, arrived)) as old_origin,
            serve_app(_answering("new")) as new_origin,
            _node(_node_config(cache_dir, old_origin)) as node,
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client,
        ):
            url = f"http://127.0.0.1:{node.http_port}"
            assert node.scheme == "http" and node.hub is not None
            assert await _text(client, url + "/a") == "old"
            new = _node_config(cache_dir, new_origin)  # the same listen: the same socket
            async with asyncio.TaskGroup() as tasks:
                in_flight = tasks.create_task(_text(client, url + "/slow"))
                await arrived.wait()  # the old app is busy with it
                reload = tasks.create_task(node.reload(new))
                # The Node has no event for "the new app serves": the reload sets its config
                # just before it drains the old app (which stops accepting first).
                while node.config is not new:  # noqa: ASYNC110
                    await asyncio.sleep(0)
                assert await _text(client, url + "/b") == "new"  # same port, new config
                assert not reload.done()  # still draining the old app
                hold.set()
            assert in_flight.result() == "old"  # finished on the config it started with


async def test_a_reload_that_cannot_load_its_tls_keeps_the_old_config_serving(
    tmp_path: Path,
) -> None:
    async with (
        asyncio.timeout(20),
        serve_app(_answering("still here")) as origin_url,
        _node(_node_config(str(tmp_path / "cache"), origin_url)) as node,
        aiohttp.ClientSession() as client,
    ):
        not_pem = tmp_path / "not.pem"
        not_pem.write_text("not a certificate")
        bad = _node_config(
            str(tmp_path / "cache"),
            origin_url,
            tls_cert=str(not_pem),
            tls_key=str(not_pem),
        )
        with pytest.raises(TlsError):
            await node.reload(bad)
        assert await _text(client, f"http://127.0.0.1:{node.http_port}/") == "still here"


async def test_a_stopped_node_refuses_connections_and_stopping_again_is_harmless(
    tmp_path: Path,
) -> None:
    async with serve_app(_answering("x")) as origin_url:
        node = Node(_node_config(str(tmp_path / "cache"), origin_url))
        await node.start()
        port = node.http_port
        await node.stop()
        await node.stop()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)


async def test_a_node_whose_port_is_busy_fails_to_start_and_leaves_nothing_open(
    tmp_path: Path,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        node = Node(_node_config(str(tmp_path / "cache"), "http://127.0.0.1:9", port))
        with pytest.raises(ListenError):
            await node.start()
        assert node.hub is None


def _config(tmp_path: Path, origin_url: str, *, extra: str = "") -> str:
    return (
        f'[server]\nlisten = "127.0.0.1:0"\ndrain_timeout = "30s"\n{extra}'
        '[session]\nlisten = "127.0.0.1:0"\n'
        f'[cache]\ndir = "{tmp_path / "cache"}"\n'
        f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )


async def test_sigterm_lets_a_slow_page_in_flight_finish_then_exits_cleanly(
    tmp_path: Path,
) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return html("slow but whole", **{"Cache-Control": "no-store"})

    origin = web.Application()
    origin.router.add_get("/slow", slow)
    config = tmp_path / "weaver.toml"
    async with serve_app(origin) as origin_url:
        config.write_text(_config(tmp_path, origin_url))
        async with weaver_serve(config) as weaver, aiohttp.ClientSession() as client:

            async def fetch() -> tuple[int, bytes]:
                async with client.get(weaver.url + "/slow") as resp:
                    return resp.status, await resp.read()

            async with asyncio.TaskGroup() as tasks:
                page = tasks.create_task(fetch())
                await arrived.wait()
                weaver.signal(signal.SIGTERM)
                await weaver.err.wait_for(lambda line: "draining" in line)
                release.set()
            assert page.result() == (200, b"slow but whole")
            assert await weaver.proc.wait() == 0


async def test_sighup_refuses_a_bad_config_and_applies_a_good_one(tmp_path: Path) -> None:
    async def one(request: web.Request) -> web.Response:
        return html("from origin one", **{"Cache-Control": "no-store"})

    async def two(request: web.Request) -> web.Response:
        return html("from origin two", **{"Cache-Control": "no-store"})

    apps = [web.Application(), web.Application()]
    apps[0].router.add_get("/", one)
    apps[1].router.add_get("/", two)
    config = tmp_path / "weaver.toml"
    async with serve_app(apps[0]) as url_one, serve_app(apps[1]) as url_two:
        config.write_text(_config(tmp_path, url_one))
        async with weaver_serve(config) as weaver, aiohttp.ClientSession() as client:

            async def body() -> bytes:
                async with client.get(weaver.url + "/") as resp:
                    return await resp.read()

            assert await body() == b"from origin one"

            config.write_text(_config(tmp_path, url_two).replace('path = "/"', 'path = "x"'))
            weaver.signal(signal.SIGHUP)
            await weaver.err.wait_for(lambda line: "still serving" in line)
            assert f'{config}: route[0].path: "x" must start with "/"' in weaver.err.text
            assert await body() == b"from origin one"

            config.write_text(_config(tmp_path, url_two))
            weaver.signal(signal.SIGHUP)
            await weaver.err.wait_for(lambda line: f"reloaded {config}" in line)
            assert await body() == b"from origin two"  # the same listener, the new config
