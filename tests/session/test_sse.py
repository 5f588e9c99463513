"""``GET /_weaver/events``: the session over Server-Sent Events, read by a real client."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.session.harness import SseEvent, read_sse_event, running_hub


async def test_sse_resumes_exactly_with_the_last_event_id_seen() -> None:
    """A client that reconnects with the last ``id`` it saw (as EventSource does) gets
    every message once, in order, whether it was cut off mid-replay, mid-live or right
    after the hello."""
    total = 200
    cuts = [1, 7, 1, 30, 2, 13, 1, 50, 4]  # events read per connection, hello included
    async with (
        asyncio.timeout(30),
        running_hub(log_max_messages=1000, log_max_bytes=10**7) as running,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        session_id, cookie = running.page()
        url = running.http_url + "/_weaver/events"
        published = 0
        last_id: int | None = None  # what EventSource keeps as its last event ID
        seen: list[SseEvent] = []
        connection = 0
        while len(seen) < total:
            for _ in range(min(15, total - published)):  # missed while disconnected
                running.hub.publish_session(session_id, published)
                published += 1
            headers = {"Cookie": cookie}
            if last_id is not None:
                headers["Last-Event-ID"] = str(last_id)
            async with http.get(url, headers=headers) as resp:
                assert resp.status == 200
                hello = await read_sse_event(resp.content)
                assert hello.data["type"] == "hello" and hello.data["session"] == session_id
                assert hello.id is None or hello.id == last_id  # never ahead of the client
                last_id = hello.id if hello.id is not None else last_id
                for i in range(cuts[connection % len(cuts)] - 1):
                    if i == 3 and published < total:  # some arrive live
                        running.hub.publish_session(session_id, published)
                        published += 1
                    if len(seen) == published:
                        break
                    event = await read_sse_event(resp.content)
                    assert event.id is not None
                    seen.append(event)
                    last_id = event.id
            connection += 1  # the client drops the connection mid-stream
    assert [e.data["data"] for e in seen] == list(range(total))
    assert [e.id for e in seen] == list(range(1, total + 1))  # ids are seq, no gap
    assert all(e.data["type"] == "message" for e in seen)
    assert connection > 10


async def test_sse_with_the_host_prefixed_cookie_serves_the_session() -> None:
    async with (
        asyncio.timeout(10),
        running_hub() as running,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        session_id, set_cookie = running.hub.open_for_page(None, secure=True)
        cookie = set_cookie.split(";", 1)[0]
        async with http.get(
            running.http_url + "/_weaver/events", headers={"Cookie": cookie}
        ) as resp:
            hello = await read_sse_event(resp.content)
    assert hello.data["session"] == session_id


async def test_sse_from_a_foreign_origin_is_refused_with_403() -> None:
    async with (
        asyncio.timeout(10),
        running_hub(allowed_origins=("https://shop.example",)) as running,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        session_id, cookie = running.page()
        url = running.http_url + "/_weaver/events"
        async with http.get(
            url, headers={"Cookie": cookie, "Origin": "https://evil.example"}
        ) as resp:
            assert resp.status == 403
            assert "session.allowed_origins" in (await resp.json())["error"]
        for origin in ("https://shop.example", "http://127.0.0.1:9"):  # allowed; same host
            async with http.get(url, headers={"Cookie": cookie, "Origin": origin}) as resp:
                assert resp.status == 200
                assert (await read_sse_event(resp.content)).data["session"] == session_id


async def test_sse_expecting_another_session_gets_the_cookies_session_from_its_start() -> None:
    async with (
        asyncio.timeout(10),
        running_hub() as running,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
    ):
        first_id, first_cookie = running.page()
        second_id, second_cookie = running.page(first_cookie)
        running.hub.publish_session(second_id, "for B")
        url = f"{running.http_url}/_weaver/events?last_seq=5&session={first_id}"
        async with http.get(url, headers={"Cookie": second_cookie}) as resp:
            hello = await read_sse_event(resp.content)
            message = await read_sse_event(resp.content)
    assert (hello.data["session"], hello.data["resumed"]) == (second_id, False)
    assert (message.id, message.data["data"]) == (1, "for B")
