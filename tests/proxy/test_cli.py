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
            '[session]\npublish_token = "env:TEST_TOKEN"\nlisten = "127.0.0.1:0"\n'
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


GOOD = """
[server]
listen = "127.0.0.1:0"

[session]
listen = "127.0.0.1:0"

[cache]
dir = "CACHE"

[[origin]]
name = "shop"
url = "http://127.0.0.1:9"

[[route]]
path = "/"
origin = "shop"
shared = true

[[route]]
path = "/live"
origin = "shop"
include_mode = "suspense"
websocket = false
"""


def _good(tmp_path: Path, **replace: str) -> Path:
    text = GOOD.replace("CACHE", str(tmp_path / "cache"))
    for old, new in replace.items():
        text = text.replace(old, new)
    config = tmp_path / "weaver.toml"
    config.write_text(text)
    return config


async def test_version_prints_the_package_version() -> None:
    code, out, _ = await weaver("--version")
    assert code == 0 and out.startswith("weaver 0.")


async def test_check_on_an_empty_file_says_there_is_nothing_to_serve(tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text("")
    code, _, err = await weaver("check", "--config", str(config))
    assert code == 2
    assert err.strip().splitlines() == [
        f"{config}: no [[origin]] and no [[route]]: nothing to serve (add an [[origin]] with "
        'name and url, and a [[route]] with path = "/" and that origin)'
    ]


async def test_check_prints_each_routes_mode(tmp_path: Path) -> None:
    code, out, _ = await weaver("check", "--config", str(_good(tmp_path)))
    assert code == 0
    assert "route   / -> shop (blocking, shared, websocket on, 0 include rule(s))" in out
    assert "route   /live -> shop (suspense, per visitor, websocket off, 0 include rule(s))" in out
    assert f"secret  generated once in {tmp_path / 'cache' / 'session.secret'}" in out


async def test_an_unreadable_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    code, _, err = await weaver("check", "--config", str(tmp_path / "missing.toml"))
    assert code == 2
    assert err.strip() == f"{tmp_path / 'missing.toml'}: cannot read: No such file or directory"


async def test_several_workers_on_the_in_process_bus_are_refused_with_the_fix(
    tmp_path: Path,
) -> None:
    config = _good(tmp_path, **{'listen = "127.0.0.1:0"': 'listen = "127.0.0.1:0"\nworkers = 2'})
    for command in ("check", "serve"):
        code, out, err = await weaver(command, "--config", str(config))
        assert code == 2 and "serving on" not in out
        assert f"{config}: server.workers: 2 workers cannot share the in-process bus" in err
        assert 'set bus.url = "redis://127.0.0.1:6379"' in err
        assert f"{config}: session.secret: is required with server.workers = 2" in err
        assert "Traceback" not in err


async def test_a_busy_port_is_one_line_and_a_non_zero_exit(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = _good(tmp_path, **{"127.0.0.1:0": f"127.0.0.1:{port}"})
        code, out, err = await weaver("serve", "--config", str(config))
    assert code == 1 and "serving on" not in out
    assert f"cannot listen on 127.0.0.1:{port} (server.listen): Address already in use" in err
    assert "Traceback" not in err


async def test_a_bad_listen_for_the_demo_is_one_line(tmp_path: Path) -> None:
    code, _, err = await weaver("demo", "--listen", "localhost")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        'weaver: error: --listen: "localhost" is not host:port (try "127.0.0.1:8080")'
    )


async def test_a_single_node_keeps_its_generated_session_secret_across_restarts(
    tmp_path: Path,
) -> None:
    from tests.integration.ops_harness import weaver_serve

    config = _good(tmp_path)
    secret = tmp_path / "cache" / "session.secret"
    async with weaver_serve(config) as served:
        assert "sessions on ws://" in served.err.text
    first = secret.read_text()
    assert len(first.strip()) == 64 and secret.stat().st_mode & 0o777 == 0o600
    async with weaver_serve(config):
        pass
    assert secret.read_text() == first
