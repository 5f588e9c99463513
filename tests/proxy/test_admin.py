"""Operator endpoints (proxy/admin.py) on a real in-process Weaver: health, readiness and
the bearer token that guards purge."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.integration.harness import TOKEN, html, weaver_config, weaver_stack
from tests.servers import serve_app
from weaver.proxy.admin import READINESS_KEY
from weaver.proxy.app import build_app


async def _page(request: web.Request) -> web.Response:
    return html("page", **{"Cache-Control": "max-age=60"})


async def _json(
    client: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, object], CIMultiDictProxy[str]]:
    async with client.request(method, url, **kwargs) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_health_is_200_and_ready_names_every_check_while_all_is_well() -> None:
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": _page}) as stack,
        aiohttp.ClientSession() as client,
    ):
        status, body, headers = await _json(client, "GET", stack.url + "/_weaver/health")
        assert (status, body, headers["Cache-Control"]) == (200, {"status": "ok"}, "no-store")
        status, body, headers = await _json(client, "GET", stack.url + "/_weaver/ready")
    assert (status, headers["Cache-Control"]) == (200, "no-store")
    assert body == {
        "status": "ready",
        "origins": {"shop": True},
        "bus": True,
        "store": True,
        "draining": False,
    }


async def test_a_draining_worker_says_unavailable_so_the_balancer_stops_first() -> None:
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": _page}) as stack,
        aiohttp.ClientSession() as client,
    ):
        stack.app[READINESS_KEY].draining = True  # what Node.stop does first
        status, body, _ = await _json(client, "GET", stack.url + "/_weaver/ready")
        health, _, _ = await _json(client, "GET", stack.url + "/_weaver/health")
    assert (status, body["status"], body["draining"]) == (503, "unavailable", True)
    assert health == 200  # alive, just not taking new work


async def test_ready_is_503_naming_an_origin_nothing_listens_on() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))  # bound, never listening: connections refused
        down = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
        with tempfile.TemporaryDirectory() as cache_dir:
            app = build_app(weaver_config(down, cache_dir))
            async with (
                asyncio.timeout(10),
                serve_app(app) as url,
                aiohttp.ClientSession() as client,
            ):
                status, body, _ = await _json(client, "GET", url + "/_weaver/ready")
    assert (status, body["origins"], body["store"]) == (503, {"shop": False}, True)


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
async def test_purge_without_the_exact_bearer_token_is_401_with_a_challenge(
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": _page}) as stack,
        aiohttp.ClientSession() as client,
    ):
        status, body, got = await _json(
            client, "POST", stack.url + "/_weaver/purge", json={"urls": ["/"]}, headers=headers
        )
    assert status == 401
    assert got["WWW-Authenticate"] == 'Bearer realm="weaver"'
    assert body == {"error": "a valid 'Authorization: Bearer <publish_token>' header is required"}


async def test_purge_with_the_token_in_any_case_of_bearer_is_accepted() -> None:
    async with (
        asyncio.timeout(10),
        weaver_stack({"/": _page}) as stack,
        aiohttp.ClientSession() as client,
    ):
        async with client.get(stack.url + "/") as resp:
            await resp.read()
        status, body, _ = await _json(
            client,
            "POST",
            stack.url + "/_weaver/purge",
            json={"urls": ["/"]},
            headers={"Authorization": f"bearer {TOKEN}"},
        )
    assert (status, body) == (200, {"purged": 1})
