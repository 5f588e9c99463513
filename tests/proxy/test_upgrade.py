"""The client inbox of an upgraded connection, on a real socket's transport."""

from __future__ import annotations

import asyncio
import socket

from weaver.proxy.upgrade import ClientInbox

TIMEOUT_S = 20
BOUND = 64 * 1024
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Feeding(asyncio.Protocol):
    """What aiohttp's server protocol does once ``set_parser`` gave it the inbox."""

    def __init__(self) -> None:
        self.paused = asyncio.Event()
        self._inbox: ClientInbox | None = None
        self._transport: asyncio.Transport | None = None

    @property
    def inbox(self) -> ClientInbox:
        assert self._inbox is not None
        return self._inbox

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inbox = ClientInbox(transport, max_bytes=BOUND)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        assert self.inbox.feed_data(data) == (False, b"")
        if not self._transport.is_reading():
            self.paused.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.feed_eof()


async def test_inbox_pauses_reading_at_its_bound_and_resumes_when_taken() -> None:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, feeding = await loop.connect_accepted_socket(Feeding, ours)
    _, client = await asyncio.open_connection(sock=theirs)

    async def send() -> None:
        client.write(PAYLOAD)
        await client.drain()
        client.close()
        await client.wait_closed()

    async with asyncio.timeout(TIMEOUT_S), asyncio.TaskGroup() as tasks:
        tasks.create_task(send())
        await feeding.paused.wait()
        assert not transport.is_reading()
        held = feeding.inbox.buffered_bytes
        assert BOUND <= held < BOUND + 256 * 1024  # the bound plus at most one socket read
        received = await feeding.inbox.read()
        assert len(received) == held
        assert transport.is_reading()
        while chunk := await feeding.inbox.read():
            received += chunk
            assert feeding.inbox.buffered_bytes == 0
        assert received == PAYLOAD
    transport.close()


async def test_inbox_hands_out_what_it_holds_before_the_end() -> None:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, feeding = await loop.connect_accepted_socket(Feeding, ours)
    feeding.inbox.feed_data(b"last words")
    feeding.inbox.feed_eof()
    async with asyncio.timeout(TIMEOUT_S):
        assert await feeding.inbox.read() == b"last words"
        assert await feeding.inbox.read() == b""
    transport.close()
    theirs.close()
