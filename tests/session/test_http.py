"""The session's HTTP endpoints: publish bounds, POSTed events, their statuses."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.session.harness import TOKEN, running_hub


async def test_publish_refuses_an_over_long_channel_name_with_400() -> None:
    async with (
        asyncio.timeout(10),
        running_hub(max_channel_bytes=256) as running,
        aiohttp.ClientSession() as http,
    ):
        url = running.http_url + "/_weaver/publish"
        headers = {"Authorization": f"Bearer {TOKEN}"}
        body = {"channel": "c" * 60_000, "data": 1}
        async with http.post(url, json=body, headers=headers) as resp:
            assert resp.status == 400
            assert await resp.json() == {
                "error": "channel name is 60000 bytes; the limit is session.max_channel_bytes = 256"
            }
        async with http.post(url, json={"channel": "c" * 256, "data": 1}, headers=headers) as r:
            assert r.status == 202
    assert running.hub.channels.history.keys() == {"c" * 256}


async def test_a_posted_event_gets_401_for_its_token_and_400_for_its_body() -> None:
    async with (
        asyncio.timeout(10),
        running_hub() as running,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        _, cookie = running.page()
        url = running.http_url + "/_weaver/events"
        event = b'{"type":"event","id":"e1","name":"n"}'
        async with http.post(url, data=event) as resp:
            assert (resp.status, await resp.json()) == (
                401,
                {"error": "malformed session token"},
            )
        # a bad body whose reason names a "token" field is still the body's fault: 400
        bad = b'{"type":"hello","last_seq":0,"token":5}'
        async with http.post(url, data=bad, headers={"Cookie": cookie}) as resp:
            assert resp.status == 400
            assert "$.token" in (await resp.json())["error"]
        async with http.post(url, data=event, headers={"Cookie": cookie}) as resp:
            assert (resp.status, await resp.json()) == (202, {"queued": "e1"})


async def test_a_posted_event_from_a_foreign_origin_is_refused_with_403() -> None:
    async with (
        asyncio.timeout(10),
        running_hub() as running,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        _, cookie = running.page()
        async with http.post(
            running.http_url + "/_weaver/events",
            data=b'{"type":"event","id":"e1","name":"n"}',
            headers={"Cookie": cookie, "Origin": "https://evil.example"},
        ) as resp:
            assert resp.status == 403
