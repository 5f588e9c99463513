"""Streaming suspense end to end: a real origin, a real Weaver, a real WebSocket client."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

from tests.integration.harness import Recorder, Stack, html, weaver_stack


class Origin:
    """A streaming fragment whose every step waits for the test: events, not sleeps."""

    def __init__(self) -> None:
        self.release = asyncio.Event()  # the test lets the rest of the stream go
        self.sent: list[str] = []  # what the origin wrote, in order
        self.closed = asyncio.Event()  # the origin saw its connection go
        self.finished = asyncio.Event()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        try:
            await response.write(b"<p>first</p>")
            self.sent.append("first")
            await self.release.wait()
            for word in ("second", "third"):
                await response.write(f"<p>{word}</p>".encode())
                self.sent.append(word)
            await response.write_eof()
            self.finished.set()
            return response
        except asyncio.CancelledError:
            self.closed.set()
            raise


def shell(include: str) -> web.Response:
    return html(f"<h1>shop</h1>{include}", **{"Cache-Control": "max-age=60"})


STREAM_TAG = '<weaver-include src="/answer" mode="suspense" stream timeout="2s">…</weaver-include>'


@asynccontextmanager
async def page(
    routes: dict[str, Any], recorder: Recorder | None = None
) -> AsyncIterator[tuple[Stack, str, str]]:
    """Weaver in front of ``routes``; (stack, the page's body, its session token)."""
    async with (
        weaver_stack(routes, recorder) as stack,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(stack.url + "/") as resp,
    ):
        body = await resp.text()
        jar: SimpleCookie = SimpleCookie()
        jar.load(resp.headers["Set-Cookie"])
        yield stack, body, jar["weaver_session"].value


@asynccontextmanager
async def session(stack: Stack, token: str, last_seq: int = 0) -> AsyncIterator[ClientConnection]:
    headers = {"Cookie": f"weaver_session={token}"}
    async with connect(stack.session_url, additional_headers=headers) as ws:
        await ws.send(orjson.dumps({"type": "hello", "last_seq": last_seq}).decode())
        hello = orjson.loads(await ws.recv())
        assert hello["type"] == "hello"
        yield ws


async def until(ws: ClientConnection, *types: str) -> list[dict[str, Any]]:
    """Messages up to and including the first of one of ``types``."""
    out: list[dict[str, Any]] = []
    while not out or out[-1]["type"] not in types:
        out.append(orjson.loads(await ws.recv()))
    return out


def appended(messages: list[dict[str, Any]]) -> str:
    return "".join(m["html"] for m in messages if m["type"] in ("slot-append", "slot"))


async def test_a_streaming_slot_reaches_the_client_before_the_origin_ends() -> None:
    origin = Origin()
    routes = {"/": lambda r: _async(shell(STREAM_TAG)), "/answer": origin.stream}
    async with asyncio.timeout(10), page(routes) as (stack, body, token):
        slot = re.findall(r'<weaver-slot id="(ws[0-9a-f]{12})"', body)[0]
        async with session(stack, token) as ws:
            first = await until(ws, "slot-append")
            assert first[-1] == {
                "type": "slot-append",
                "seq": 1,
                "id": slot,
                "html": "<p>first</p>",
            }
            assert origin.sent == ["first"]  # the origin has not sent its last chunk yet
            origin.release.set()
            rest = await until(ws, "slot-done")
    assert appended(first + rest) == "<p>first</p><p>second</p><p>third</p>"
    assert rest[-1] == {"type": "slot-done", "seq": rest[-1]["seq"], "id": slot}
    seqs = [m["seq"] for m in first + rest]
    assert seqs == list(range(1, len(seqs) + 1))


async def _async(response: web.StreamResponse) -> web.StreamResponse:
    return response


async def test_nested_blocking_includes_in_a_stream_come_in_order_fetched_in_parallel() -> None:
    second_asked = asyncio.Event()

    async def answer(request: web.Request) -> web.Response:
        return html(
            '<p>a</p><weaver-include src="/card/1">c1?</weaver-include>'
            '<weaver-include src="/card/2">c2?</weaver-include><p>z</p>'
        )

    async def card(request: web.Request) -> web.Response:
        number = request.match_info["n"]
        if number == "1":
            await second_asked.wait()  # card 1 ends only once card 2 was asked: parallel
        else:
            second_asked.set()
        return html(f"<b>card {number}</b>")

    routes = {"/": lambda r: _async(shell(STREAM_TAG)), "/answer": answer, "/card/{n}": card}
    async with asyncio.timeout(10), page(routes) as (stack, _, token):
        async with session(stack, token) as ws:
            messages = await until(ws, "slot-done", "slot-error")
    assert messages[-1]["type"] == "slot-done"
    assert appended(messages) == "<p>a</p><b>card 1</b><b>card 2</b><p>z</p>"


async def test_event_stream_progress_maps_one_to_one_and_done_ends_the_slot() -> None:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(
            b'event: progress\ndata: {"stage": "searching", "percent": 10, "message": "m1"}\n\n'
            b"data: <p>one</p>\n\n"
            b'event: progress\r\ndata: {"stage": "writing", "percent": 150}\r\n\r\n'
            b"data: <p>two</p>\n\n"
            b"event: done\ndata:\n\n"
            b"data: <p>after done</p>\n\n"
        )
        await response.write_eof()
        return response

    # No stream attribute: the text/event-stream answer streams by itself.
    tag = '<weaver-include src="/answer" mode="suspense">…</weaver-include>'
    routes = {"/": lambda r: _async(shell(tag)), "/answer": answer}
    async with asyncio.timeout(10), page(routes) as (stack, body, token):
        slot = re.findall(r'<weaver-slot id="(w[0-9a-f]{12})"', body)[0]
        async with session(stack, token) as ws:
            messages = await until(ws, "slot-done", "slot-error")
    progress = [
        {k: m[k] for k in ("id", "stage", "percent", "message")}
        for m in messages
        if m["type"] == "slot-progress"
    ]
    assert progress == [
        {"id": slot, "stage": "searching", "percent": 10.0, "message": "m1"},
        {"id": slot, "stage": "writing", "percent": 100.0, "message": ""},
    ]
    assert appended(messages) == "<p>one</p><p>two</p>"
    assert messages[-1]["type"] == "slot-done"


async def test_a_cancel_message_closes_the_origin_fetch_and_ends_the_slot_cancelled() -> None:
    origin = Origin()
    routes = {"/": lambda r: _async(shell(STREAM_TAG)), "/answer": origin.stream}
    async with asyncio.timeout(10), page(routes) as (stack, body, token):
        slot = re.findall(r'<weaver-slot id="(ws[0-9a-f]{12})"', body)[0]
        async with session(stack, token) as ws:
            await until(ws, "slot-append")
            await ws.send(orjson.dumps({"type": "cancel", "id": slot}).decode())
            ended = await until(ws, "slot-error", "slot-done")
            await origin.closed.wait()  # the origin saw its connection closed
    assert ended[-1] == {"type": "slot-error", "seq": 2, "id": slot, "reason": "cancelled"}
    assert origin.sent == ["first"]


async def test_leaving_the_page_cancels_every_slot_stream() -> None:
    origin = Origin()
    routes = {"/": lambda r: _async(shell(STREAM_TAG)), "/answer": origin.stream}
    async with asyncio.timeout(10), page(routes) as (stack, _, token):
        async with session(stack, token) as ws:
            await until(ws, "slot-append")
        # The client closed with 1000 (the page went away): the origin fetch stops.
        await origin.closed.wait()
    assert origin.sent == ["first"]
    assert not origin.finished.is_set()


async def test_resuming_mid_stream_loses_and_duplicates_nothing() -> None:
    origin = Origin()
    routes = {"/": lambda r: _async(shell(STREAM_TAG)), "/answer": origin.stream}
    async with asyncio.timeout(10), page(routes) as (stack, _, token):
        async with session(stack, token) as ws:
            before = await until(ws, "slot-append")
            assert ws.transport is not None
            ws.transport.abort()  # a network loss, not a page leaving: no close frame
        origin.release.set()
        await origin.finished.wait()
        async with session(stack, token, last_seq=before[-1]["seq"]) as ws:
            after = await until(ws, "slot-done")
    seqs = [m["seq"] for m in before + after]
    assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
    assert appended(before + after) == "<p>first</p><p>second</p><p>third</p>"
