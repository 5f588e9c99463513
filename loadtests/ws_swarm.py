"""A swarm of lean WebSocket session clients in one process (epoll, no asyncio).

Why not the websockets client: at 5,000 sockets a process, its per-message cost (frame
parser, queue, a task wake-up, a coroutine per socket) made the client processes the
bottleneck of the benchmark (a publish to 1,000 sessions took the client ~25 ms to read),
and they died in a 10,000-socket storm. Here a socket is a state and a buffer; a message's
arrival is the kernel's receive timestamp (``SO_TIMESTAMPNS``), so the figure is when the
server's frame reached the client, not when a busy client process got round to it (the
user-space time is kept too).

The kernel stamps what a read returns with the arrival of its last segment (TCP
coalesces segments queued unread, keeping the newest stamp), so a message is timed
exactly only when it is the one message a read returned: a message that waited unread
for the next one would take the next one's arrival. Each received message says whether
its time is exact; the parent waits for every client to have read a publication
(``wait``) before it publishes the next, so that they are.

The parent drives it through a pipe: ``("connect", last_seqs | None)`` opens every socket
at once (no pacing: a storm) and answers ``("ready", report)``; ``("drop",)`` closes them
all abruptly (RST, as a node restart does); ``("collect",)`` answers the messages
received since the last collect and the errors of the sockets that failed so far;
``("wait", n, timeout_s)`` answers ``("waited", short)`` once every open client has
read n channel messages since it connected, or after ``timeout_s`` (``short``: how many
had not); ``("hold",)`` answers ``("holding",)`` and reads nothing until the next
command (the parent publishes meanwhile: the clients then take no CPU from the server
while it sends, as clients on other machines would not; the kernel's stamps are the
same); ``("exit",)``. Every phase has a deadline; a phase past it answers with what failed
rather than hanging.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import time
from multiprocessing.connection import Connection
from typing import Any

import orjson

CONNECTING, UPGRADING, HELLO, OPEN = range(4)
_TS = struct.Struct("qq")
_ANC = socket.CMSG_SPACE(_TS.size)
SO_TIMESTAMPNS: int = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; typeshed lacks it


def client_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A masked client frame (mask key 0: the payload goes as is; RFC 6455 §5.3)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, 0x80 | size))
    else:
        header = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    return header + b"\0\0\0\0" + payload


class Client:
    __slots__ = (
        "buffer",
        "error",
        "hello",
        "index",
        "last_seq",
        "messages",
        "sock",
        "state",
        "token",
    )

    def __init__(self, index: int, token: str) -> None:
        self.index = index
        self.token = token
        self.sock: socket.socket | None = None
        self.state = CONNECTING
        self.buffer = b""
        self.last_seq = 0
        self.hello: dict[str, Any] | None = None
        self.error: str | None = None
        self.messages = 0  # channel messages read since it connected


def _frames(client: Client) -> list[tuple[int, bytes]]:
    """Whole server frames (unmasked) taken off the client's buffer."""
    out = []
    data = client.buffer
    pos = 0
    while len(data) - pos >= 2:
        opcode, size = data[pos] & 0x0F, data[pos + 1] & 0x7F
        start = pos + 2
        if size == 126:
            if len(data) - pos < 4:
                break
            size, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        elif size == 127:
            if len(data) - pos < 10:
                break
            size, start = int.from_bytes(data[pos + 2 : pos + 10], "big"), pos + 10
        if len(data) < start + size:
            break
        out.append((opcode, data[start : start + size]))
        pos = start + size
    client.buffer = data[pos:]
    return out


def run(
    port: int, tokens: list[str], channel: str, commands: Connection, deadline_s: float
) -> None:
    """The client process: serve the parent's commands until ``exit``."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    clients = [Client(i, token) for i, token in enumerate(tokens)]
    by_fd: dict[int, Client] = {}
    epoll = select.epoll()
    # kernel time, user time, data JSON, whether the kernel time is exact (module docstring)
    received: list[tuple[float, float, bytes, bool]] = []
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    subscribe = client_frame(orjson.dumps({"type": "subscribe", "channel": channel}))

    def fail(client: Client, why: str) -> None:
        client.error = why
        close(client)

    def close(client: Client) -> None:
        if client.sock is not None:
            by_fd.pop(client.sock.fileno(), None)
            try:
                epoll.unregister(client.sock.fileno())
            except OSError:
                pass
            client.sock.close()
            client.sock = None

    def on_frames(client: Client, kernel_t: float, user_t: float, had_bytes: bool) -> None:
        frames = _frames(client)
        is_exact = not had_bytes and not client.buffer and len(frames) == 1
        for opcode, payload in frames:
            if opcode == 0x9:  # ping: pong (the server closes a silent client)
                assert client.sock is not None
                client.sock.send(client_frame(payload, 0xA))
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if payload else 1005
                fail(client, f"closed by the server: {code} {payload[2:].decode(errors='replace')}")
                return
            elif opcode == 0x1:
                message = orjson.loads(payload)
                if client.state == HELLO:
                    client.hello = message
                    client.state = OPEN
                    assert client.sock is not None
                    client.sock.send(subscribe)
                    continue
                client.last_seq = message["seq"]
                if message["type"] == "message":
                    client.messages += 1
                    received.append((kernel_t, user_t, orjson.dumps(message["data"]), is_exact))

    def readable(client: Client) -> None:
        assert client.sock is not None
        try:
            data, ancillary, _, _ = client.sock.recvmsg(65536, _ANC)
        except BlockingIOError:
            return
        except OSError as exc:
            fail(client, f"recv: {exc}")
            return
        user_t = time.time()
        kernel_t = user_t
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanos = _TS.unpack(value[: _TS.size])
                kernel_t = seconds + nanos / 1e9
        if not data:
            fail(client, f"connection closed by the server in state {client.state}")
            return
        had_bytes = bool(client.buffer)
        client.buffer += data
        if client.state == UPGRADING:
            head, sep, rest = client.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                fail(client, f"handshake refused: {head.splitlines()[0].decode(errors='replace')}")
                return
            client.buffer = rest
            client.state = HELLO
            hello: dict[str, Any] = {"type": "hello", "last_seq": client.last_seq}
            hello["token"] = client.token
            if client.hello is not None:
                hello["session"] = client.hello["session"]
            client.sock.send(client_frame(orjson.dumps(hello)))
            had_bytes = False
        on_frames(client, kernel_t, user_t, had_bytes)

    def connect_all(is_resume: bool) -> dict[str, Any]:
        started = time.monotonic()
        previous = {c.index: (c.hello or {}).get("session") for c in clients}
        for client in clients:
            client.state, client.buffer, client.error = CONNECTING, b"", None
            client.messages = 0
            if not is_resume:
                client.hello, client.last_seq = None, 0
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            code = sock.connect_ex(("127.0.0.1", port))
            if code not in (0, errno.EINPROGRESS):
                sock.close()
                client.error = f"connect: {os.strerror(code)}"
                continue
            client.sock = sock
            by_fd[sock.fileno()] = client
            epoll.register(sock.fileno(), select.EPOLLOUT)
        was_resumed: list[bool] = []
        deadline = started + deadline_s
        pending = sum(1 for c in clients if c.sock is not None)
        while pending and time.monotonic() < deadline:
            for fd, events in epoll.poll(0.05):
                found = by_fd.get(fd)
                if found is None or found.sock is None:
                    continue
                client, sock = found, found.sock
                if client.state == CONNECTING:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(client, f"connect: {os.strerror(err)}")
                        continue
                    sock.send(request)
                    client.state = UPGRADING
                    epoll.modify(fd, select.EPOLLIN)
                    continue
                if events & select.EPOLLIN:
                    readable(client)
            pending = sum(1 for c in clients if c.sock is not None and c.state != OPEN)
        elapsed = time.monotonic() - started
        for client in clients:
            if client.sock is not None and client.state != OPEN:
                fail(client, f"no hello within the phase deadline of {deadline_s:.0f} s")
            elif client.sock is not None and client.hello is not None:
                was_resumed.append(
                    bool(client.hello.get("resumed"))
                    and client.hello.get("session") == previous[client.index]
                )
        errors: dict[str, int] = {}
        for client in clients:
            if client.error is not None:
                errors[client.error] = errors.get(client.error, 0) + 1
        return {
            "open": sum(1 for c in clients if c.state == OPEN and c.sock is not None),
            "elapsed_s": elapsed,
            "resumed": sum(was_resumed),
            "errors": errors,
        }

    def pump(until: float) -> None:
        while time.monotonic() < until:
            if commands.poll(0):
                return
            read_ready(0.02)

    def read_ready(timeout_s: float) -> None:
        for fd, _ in epoll.poll(timeout_s):
            client = by_fd.get(fd)
            if client is not None and client.sock is not None:
                readable(client)

    def wait_for(messages: int, timeout_s: float) -> int:
        until = time.monotonic() + timeout_s
        short = [c for c in clients if c.sock is not None and c.messages < messages]
        while short and time.monotonic() < until:
            read_ready(0.005)
            short = [c for c in short if c.sock is not None and c.messages < messages]
        return len(short)

    is_holding = False
    while True:
        if not is_holding and not commands.poll(0):
            pump(time.monotonic() + 0.5)
            continue
        command = commands.recv()  # holding: blocks, reading nothing, until the next
        is_holding = False
        if command[0] == "connect":
            commands.send(("ready", connect_all(is_resume=command[1])))
        elif command[0] == "drop":
            for client in clients:
                if client.sock is not None:
                    client.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    close(client)  # RST: the server sees a lost network, not a leave
            commands.send(("dropped", len(clients)))
        elif command[0] == "collect":
            errors: dict[str, int] = {}
            for client in clients:
                if client.error is not None:
                    errors[client.error] = errors.get(client.error, 0) + 1
            commands.send(("received", (received[:], errors)))
            received.clear()
        elif command[0] == "wait":
            commands.send(("waited", wait_for(command[1], command[2])))
        elif command[0] == "hold":
            is_holding = True
            commands.send(("holding", None))
        elif command[0] == "exit":
            for client in clients:
                close(client)
            return
