"""A real ``weaver serve`` killed with SIGKILL mid-fill leaves a store with whole entries."""

from __future__ import annotations

import asyncio
import enum
import random
import signal
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.servers import serve_app
from tests.weaver_process import spawn_serve
from weaver.cache.store import Store

ROUNDS = 4
PAGES = 9  # per round: three of each Mode
STEPS = 8  # writes per body


def body_for(path: str) -> bytes:
    """What the origin sends for ``path``: checkable after the crash."""
    return (f"<p>{path}</p>" * 2000).encode()


class Mode(enum.Enum):
    """Where a page's fill is when the process is killed."""

    CUT = "cut"  # stopped mid-body, the origin holding the rest back
    RACING = "racing"  # the rest of the body is let go at the moment of the kill
    WHOLE = "whole"  # sent whole, read whole by its client before the kill


@dataclass
class Round:
    """One round's plan, and the origin's side of it: each page stops after ``stops[path]``
    writes until the test lets it go, so the kill lands where the plan says, not where a
    clock happened to be."""

    stops: dict[str, int]
    modes: dict[str, Mode]
    stalled: int = 0
    all_stalled: asyncio.Event = field(default_factory=asyncio.Event)
    race: asyncio.Event = field(default_factory=asyncio.Event)
    over: asyncio.Event = field(default_factory=asyncio.Event)

    async def stall(self, path: str) -> None:
        self.stalled += 1
        if self.stalled == sum(mode is not Mode.WHOLE for mode in self.modes.values()):
            self.all_stalled.set()
        await (self.race if self.modes[path] is Mode.RACING else self.over).wait()


def plan(round_: int, rng: random.Random) -> Round:
    paths = [f"/r{round_}p{i}" for i in range(PAGES)]
    modes = {path: list(Mode)[i % len(Mode)] for i, path in enumerate(paths)}
    stops = {
        path: STEPS if modes[path] is Mode.WHOLE else rng.randint(0, STEPS - 1) for path in paths
    }
    return Round(stops, modes)


def streaming_origin(rounds: dict[str, Round]) -> web.Application:
    async def streaming_page(request: web.Request) -> web.StreamResponse:
        round_ = rounds[request.path]
        response = web.StreamResponse(
            headers={"Content-Type": "text/html", "Cache-Control": "max-age=3600"}
        )
        await response.prepare(request)
        data = body_for(request.path)
        step = len(data) // STEPS
        for index, start in enumerate(range(0, len(data), step)):
            if index == round_.stops[request.path]:
                await round_.stall(request.path)
            await response.write(data[start : start + step])
        await response.write_eof()
        return response

    origin = web.Application()
    origin.router.add_get("/{name}", streaming_page)
    return origin


def rounds_modes(rounds: dict[str, Round]) -> dict[str, Mode]:
    return {path: round_.modes[path] for path, round_ in rounds.items()}


async def hit(client: aiohttp.ClientSession, url: str) -> None:
    try:
        async with client.get(url) as resp:
            await resp.read()
    except aiohttp.ClientError:
        pass  # the server was killed under us: expected


async def test_sigkill_mid_fill_leaves_only_complete_entries(tmp_path: Path) -> None:
    rng = random.Random(11)  # the stopping points vary by round, the same in every run
    rounds: dict[str, Round] = {}
    cache_dir = tmp_path / "cache"
    async with (
        serve_app(streaming_origin(rounds)) as origin_url,
        aiohttp.ClientSession() as client,
    ):
        config = tmp_path / "weaver.toml"
        config.write_text(
            '[server]\nlisten = "127.0.0.1:0"\n[session]\nlisten = "127.0.0.1:0"\n'
            f'[cache]\ndir = "{cache_dir}"\n'
            f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
            '[[route]]\npath = "/"\norigin = "o"\n'
        )
        for round_ in range(ROUNDS):
            this = plan(round_, rng)
            rounds.update(dict.fromkeys(this.stops, this))
            proc, url = await asyncio.wait_for(spawn_serve(config), 30)
            try:
                async with asyncio.timeout(30), asyncio.TaskGroup() as tasks:
                    whole = [
                        tasks.create_task(hit(client, url + path))
                        for path, mode in this.modes.items()
                        if mode is Mode.WHOLE
                    ]
                    for path, mode in this.modes.items():
                        if mode is not Mode.WHOLE:
                            tasks.create_task(hit(client, url + path))
                    await this.all_stalled.wait()  # every other fill is mid-body
                    await asyncio.gather(*whole)
                    this.race.set()  # some fills finish as the process dies
                    proc.send_signal(signal.SIGKILL)
            finally:
                this.over.set()
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()

    store = Store(str(cache_dir), max_size_bytes=1024**3)
    await store.open()
    try:
        assert await store.check() == []
        keys = await store.keys()
        assert keys, "no fill finished in any round: the test proved nothing"
        stored = {"/" + key.split("/", 1)[1].split("?")[0].split("|")[0] for key in keys}
        cut = {path for path, mode in rounds_modes(rounds).items() if mode is Mode.CUT}
        assert not stored & cut  # a body the origin never finished was never committed
        for key in keys:
            entry = await store.get(key)
            assert entry is not None
            path = "/" + key.split("/", 1)[1].split("?")[0].split("|")[0]
            got = b"".join([chunk async for chunk in entry.body()])
            assert got == body_for(path), key
    finally:
        await store.close()
