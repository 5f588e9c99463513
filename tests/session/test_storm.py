"""A reconnect storm: every visitor of a node reconnecting at once, as after a deploy."""

from __future__ import annotations

import asyncio
import socket
import struct

import orjson
from websockets.asyncio.client import connect

from tests.session.harness import receive, running_hub

STORM = 2000  # two sockets each (client and server) in this process: within 20,000 files


def retransmissions(sock: socket.socket) -> int:
    """The segments the kernel sent again on ``sock`` (Linux ``tcp_info.tcpi_total_retrans``,
    at byte 100): a SYN the server's full accept queue dropped is one."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    total: int = struct.unpack_from("I", info, 100)[0]
    return total


async def test_a_burst_of_2000_concurrent_handshakes_all_complete_and_resume() -> None:
    """2,000 held sessions reconnect at once, their SYNs all sent before the server
    accepts one (one loop runs both sides): with websockets' default listen backlog of
    100 most were dropped by the kernel (its accept queue full) and sent again 1 or 3 s
    later. Each must get its hello, resumed, then its missed message, and no SYN needs
    sending twice."""
    async with asyncio.timeout(120), running_hub() as running:
        sessions = [running.page() for _ in range(STORM)]
        for session_id, _ in sessions:
            running.hub.publish_session(session_id, "seen")
            running.hub.publish_session(session_id, "missed")
        resumed: list[tuple[str, bool, object]] = []
        retransmitted: list[int] = []
        everyone_in = asyncio.Event()

        async def reconnect(cookie: str) -> None:
            async with connect(running.ws_url, additional_headers={"Cookie": cookie}) as ws:
                await ws.send(orjson.dumps({"type": "hello", "last_seq": 1}).decode())
                hello = await receive(ws, timeout_s=60)
                missed = await receive(ws, timeout_s=60)
                resumed.append((hello["session"], hello["resumed"], missed["data"]))
                retransmitted.append(retransmissions(ws.transport.get_extra_info("socket")))
                if len(resumed) == STORM:
                    everyone_in.set()
                await everyone_in.wait()  # all 2,000 open at once

        async with asyncio.TaskGroup() as tasks:
            for _, cookie in sessions:
                tasks.create_task(reconnect(cookie))
    assert sorted(resumed) == sorted((session_id, True, "missed") for session_id, _ in sessions)
    assert sum(retransmitted) == 0
