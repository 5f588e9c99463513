"""bench_fanout_floor: what one process pays to send one small frame to N sockets.

The floor under a session fan-out (bench_sessions.py): N loopback TCP connections, the
receiving ends in a child process reading them with epoll (as ws_swarm.py does), and
this process writing one 82-byte WebSocket text frame to each, ``--rounds`` times, by
``socket.send`` and by uvloop's ``transport.write`` (what Weaver's direct writer calls).
Per way it prints the wall and CPU time of a round (median and min) and the µs per send,
with the load average: the CPU time is this process's own, so it holds on a shared
machine where the wall time does not.

``--receiver idle`` leaves the receiving ends unread during a round (no reader waking
on the other core: what is left is the sender's own kernel work); ``--pin`` puts the
sender on CPU 0 and the receiver on CPU 1, so the reader cannot preempt the sender.

Run: ``python -m loadtests.bench_fanout_floor [--sizes 1000,10000] [--rounds 25]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import resource
import select
import socket
import statistics
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import uvloop

PAYLOAD = b'{"type":"message","seq":12,"channel":"bench","data":{"t":1765100000.1,"n":7}}'
FRAME = bytes((0x81, len(PAYLOAD))) + PAYLOAD  # unmasked text frame, as a server sends


def _raise_open_files_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def receiver(port: int, total: int, is_reading: bool, is_pinned: bool, pipe: Connection) -> None:
    """Open ``total`` connections, then read them (or not) until told to stop."""
    _raise_open_files_limit()
    if is_pinned:
        os.sched_setaffinity(0, {1})
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(total)]
    epoll = select.epoll()
    by_fd = {}
    for sock in socks:
        sock.setblocking(False)
        epoll.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    pipe.send("ready")
    while not pipe.poll(0):
        if not is_reading:  # drained between rounds only
            time.sleep(0.02)
            for sock in socks:
                try:
                    while sock.recv(65536):
                        pass
                except BlockingIOError:
                    pass
            continue
        for fd, _ in epoll.poll(0.02):
            try:
                by_fd[fd].recv(65536)
            except BlockingIOError:
                pass
    for sock in socks:
        sock.close()


def timed(rounds: int, send_all: Callable[[], None]) -> tuple[list[float], list[float]]:
    walls, cpus = [], []
    for _ in range(rounds):
        cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
        send_all()
        walls.append((time.perf_counter_ns() - wall0) / 1e6)
        cpus.append((time.process_time_ns() - cpu0) / 1e6)
        time.sleep(0.05)
    return walls, cpus


async def transport_rounds(
    conns: list[socket.socket], rounds: int
) -> tuple[list[float], list[float]]:
    loop = asyncio.get_running_loop()
    transports = []
    for conn in conns:
        transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, sock=conn)
        transports.append(transport)
    writes = [transport.write for transport in transports]

    def send_all() -> None:
        for write in writes:
            write(FRAME)

    walls, cpus = [], []
    for _ in range(rounds):  # as timed(), but the loop runs between rounds
        cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
        send_all()
        walls.append((time.perf_counter_ns() - wall0) / 1e6)
        cpus.append((time.process_time_ns() - cpu0) / 1e6)
        await asyncio.sleep(0.05)
    for transport in transports:
        transport.close()
    return walls, cpus


def summary(total: int, name: str, walls: list[float], cpus: list[float]) -> str:
    return (
        f"{total:6d} sends, {name:15s}: wall median {statistics.median(walls):7.2f} ms "
        f"(min {min(walls):6.2f}), CPU median {statistics.median(cpus):7.2f} ms "
        f"(min {min(cpus):6.2f}) = {statistics.median(cpus) * 1000 / total:5.2f} µs CPU "
        f"a send"
    )


def run(total: int, rounds: int, is_reading: bool, is_pinned: bool) -> None:
    _raise_open_files_limit()
    if is_pinned:
        os.sched_setaffinity(0, {0})
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    port = listener.getsockname()[1]
    ours, theirs = mp.get_context("spawn").Pipe()
    child = mp.get_context("spawn").Process(
        target=receiver, args=(port, total, is_reading, is_pinned, theirs), daemon=True
    )
    child.start()
    try:
        conns: list[socket.socket] = []
        while len(conns) < total:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.setblocking(False)
            conns.append(conn)
        if not ours.poll(60):
            raise SystemExit("the receiver did not connect within 60 s")
        ours.recv()
        sends = [conn.send for conn in conns]

        def send_all() -> None:
            for send in sends:
                send(FRAME)

        load = "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        print(summary(total, "socket.send", *timed(rounds, send_all)), f"[{load}]", flush=True)
        walls, cpus = uvloop.run(transport_rounds(conns, rounds))
        load = "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        print(summary(total, "transport.write", walls, cpus), f"[{load}]", flush=True)
    finally:
        ours.send("stop")
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--rounds", type=int, default=25)
    parser.add_argument("--receiver", choices=("reading", "idle"), default="reading")
    parser.add_argument("--pin", action="store_true", help="sender on CPU 0, receiver on 1")
    args = parser.parse_args()
    for total in (int(size) for size in args.sizes.split(",")):
        run(total, args.rounds, args.receiver == "reading", args.pin)


if __name__ == "__main__":
    main()
