"""The ``weaver`` command as operators run it: real processes, real files, real servers."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.integration.harness import html
from tests.servers import serve_app

BAD = """
[server]
listen = "127.0.0.1:notaport"

[[origin]]
name = "shop"
url = "http://127.0.0.1:9000"

[[route]]
path = "/"
origin = "shop"

[[route]]
path = "/x"
origin = "nowhere"

[[route.include]]
src = "/r*"
mode = "blokking"
"""


async def weaver(*args: str, timeout_s: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "weaver.proxy.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


async def test_check_prints_every_error_with_file_and_key_path(tmp_path: Path) -> None:
    config = tmp_path / "weaver.toml"
    config.write_text(BAD)
    code, _, err = await weaver("check", "--config", str(config))
    assert code == 2
    assert f"{config}: server.listen:" in err
    assert (
        f'{config}: route[1].include[0].mode: expected one of blocking, suspense; got "blokking"'
        in err
    )
    assert f"{config}: route[1].origin:" in err and "nowhere" in err


async def test_serve_refuses_a_bad_config_the_same_way(tmp_path: Path) -> None:
    config = tmp_path / "weaver.toml"
    config.write_text(BAD)
    code, out, err = await weaver("serve", "--config", str(config))
    assert code == 2
    assert "serving on" not in out
    assert 'got "blokking"' in err


async def test_check_summarises_a_good_config(tmp_path: Path) -> None:
    config = tmp_path / "weaver.toml"
    config.write_text(
        BAD.replace("notaport", "8080")
        .replace("blokking", "suspense")
        .replace('"nowhere"', '"shop"')
    )
    code, out, _ = await weaver("check", "--config", str(config))
    assert code == 0
    assert f"{config}: ok" in out and "route   /x -> shop" in out


async def test_purge_from_the_command_line_reaches_the_running_server(tmp_path: Path) -> None:
    async def page(request: web.Request) -> web.Response:
        return html("cached", **{"Cache-Control": "max-age=600", "Surrogate-Key": "home"})

    origin = web.Application()
    origin.router.add_get("/", page)
    async with serve_app(origin) as origin_url:
        config = tmp_path / "weaver.toml"
        config.write_text(
            '[server]\nlisten = "127.0.0.1:0"\n'
            '[session]\npublish_token = "env:TEST_TOKEN"\n'
            f'[cache]\ndir = "{tmp_path / "cache"}"\n'
            f'[[origin]]\nname = "o"\nurl = "{origin_url}"\n'
            '[[route]]\npath = "/"\norigin = "o"\n'
        )
        env_token = {"TEST_TOKEN": "s3cret"}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "weaver.proxy.cli",
            "serve",
            "--config",
            str(config),
            stdout=asyncio.subprocess.PIPE,
            env={**_env(), **env_token},
        )
        try:
            assert proc.stdout is not None
            line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
            url = line.split("serving on ", 1)[1].strip().rstrip("/")
            async with aiohttp.ClientSession() as client:
                for expected in ("MISS", "HIT"):
                    async with client.get(url + "/") as resp:
                        assert await resp.read() == b"cached"
                        assert resp.headers["X-Weaver-Cache"] == expected
                purge = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "weaver.proxy.cli",
                    "purge",
                    "--config",
                    str(config),
                    "--endpoint",
                    url + "/_weaver/purge",
                    "--tag",
                    "home",
                    stdout=asyncio.subprocess.PIPE,
                    env={**_env(), **env_token},
                )
                out, _ = await asyncio.wait_for(purge.communicate(), 30)
                assert purge.returncode == 0
                assert '"purged":1' in out.decode().replace(" ", "")
                for expected in ("MISS", "HIT"):
                    async with client.get(url + "/") as resp:
                        # Read to the end: a MISS still streaming would be joined
                        # (COALESCED) by a request sent before its body was read.
                        assert await resp.read() == b"cached"
                        assert resp.headers["X-Weaver-Cache"] == expected
                by_url = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "weaver.proxy.cli",
                    "purge",
                    "--config",
                    str(config),
                    "--endpoint",
                    url + "/_weaver/purge",
                    "--url",
                    url + "/",
                    "--url",
                    "/nothing/here",
                    stdout=asyncio.subprocess.PIPE,
                    env={**_env(), **env_token},
                )
                out, _ = await asyncio.wait_for(by_url.communicate(), 30)
                assert by_url.returncode == 0
                assert '"purged":1' in out.decode().replace(" ", "")
                async with client.get(url + "/") as resp:
                    assert resp.headers["X-Weaver-Cache"] == "MISS"
                wrong = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "weaver.proxy.cli",
                    "purge",
                    "--config",
                    str(config),
                    "--endpoint",
                    url + "/_weaver/purge",
                    "--tag",
                    "home",
                    stderr=asyncio.subprocess.PIPE,
                    env={**_env(), "TEST_TOKEN": "wrong"},
                )
                _, err = await asyncio.wait_for(wrong.communicate(), 30)
                assert wrong.returncode == 1 and "401" in err.decode()
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 30)
        assert proc.returncode == 0  # SIGTERM is a graceful stop


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
