"""A real origin behind a real Weaver: pages are woven, fragments run in parallel."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

from tests.integration.harness import Recorder, html, weaver_in_front_of
from tests.servers import Handler, serve_app


def fragment(text: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return html(text)

    return handler


def hanging(cancelled: list[str], all_cancelled: asyncio.Event, count: int = 1) -> Handler:
    """A fragment that never answers; ``all_cancelled`` is set once ``count`` of its
    requests were cancelled (Weaver closed their connections)."""

    async def handler(request: web.Request) -> web.Response:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(request.path)
            if len(cancelled) == count:
                all_cancelled.set()
            raise
        raise AssertionError("unreachable")

    return handler


def page(text: str, **headers: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return html(text, **headers)

    return handler


async def get(url: str, **kwargs: object) -> tuple[int, str, CIMultiDictProxy[str]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(url, **kwargs) as resp:  # type: ignore[arg-type]  # test kwargs
            return resp.status, await resp.text(), resp.headers


async def test_ten_blocking_fragments_are_fetched_in_parallel_and_spliced_in_order() -> None:
    # Every fragment waits until all ten requests have reached the origin (fetched one
    # after another, the first would never answer and the page would show fallbacks),
    # then they answer last one first: order cannot come from arrival or completion.
    arrived: list[int] = []
    all_here = asyncio.Event()
    answered = [asyncio.Event() for _ in range(11)]
    answered[10].set()

    def fragment_in_turn(i: int) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            arrived.append(i)
            if len(arrived) == 10:
                all_here.set()
            await all_here.wait()
            await answered[i + 1].wait()
            answered[i].set()
            return html(f"[{i}]")

        return handler

    routes: dict[str, Handler] = {f"/f/{i}": fragment_in_turn(i) for i in range(10)}
    shell = "<p>" + "".join(f'<esi:include src="/f/{i}"/>,' for i in range(10)) + "</p>"
    routes["/"] = page(shell)
    async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
        status, body, headers = await get(url + "/")
    assert status == 200
    assert body == "<p>" + "".join(f"[{i}]," for i in range(10)) + "</p>"
    assert headers["X-Weaver-Cache"] == "BYPASS"
    assert sorted(arrived) == list(range(10))


async def test_shell_bytes_reach_the_client_before_any_fragment_is_done() -> None:
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        await release.wait()
        return html("<b>late</b>")

    routes = {"/": page('<h1>shell</h1><esi:include src="/slow"/><p>end</p>'), "/slow": slow}
    async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
        async with aiohttp.ClientSession() as client, client.get(url + "/") as resp:
            assert resp.status == 200
            first = await resp.content.readany()
            assert first.startswith(b"<h1>shell</h1>")
            assert b"late" not in first
            release.set()
            rest = await resp.content.read()
    assert (first + rest).decode() == "<h1>shell</h1><b>late</b><p>end</p>"


async def test_nested_includes_are_woven_and_a_self_include_is_cut_as_a_loop() -> None:
    routes = {
        "/": page('A<esi:include src="/outer"/>Z|<weaver-include src="/loop">L</weaver-include>'),
        "/outer": page('B<esi:include src="/inner"/>Y'),
        "/inner": page("C"),
        "/loop": page('o<weaver-include src="/loop">end</weaver-include>'),
    }
    recorder = Recorder()
    async with asyncio.timeout(10), weaver_in_front_of(routes, recorder) as url:
        status, body, _ = await get(url + "/")
    assert status == 200
    # The same src on its own ancestor chain is a loop: cut with its fallback at once.
    assert re.fullmatch(r"ABCYZ\|o<!-- weaver: [^>]*loop[^>]*-->end", body), body
    assert recorder.requests.count("/loop") == 1


async def test_nesting_ends_at_the_depth_limit() -> None:
    routes = {
        "/": page('<esi:include src="/d1"/>'),
        **{
            f"/d{n}": page(f'{n}<weaver-include src="/d{n + 1}">end</weaver-include>')
            for n in range(1, 6)
        },
    }
    async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
        status, body, _ = await get(url + "/")
    assert status == 200
    # Depth limit 3: three levels fetched, the fourth include yields its fallback.
    assert re.fullmatch(r"123<!-- weaver: [^>]*depth[^>]*-->end", body), body


def final_timing(caplog: pytest.LogCaptureFixture) -> str:
    """The Server-Timing of the finished weave, as logged (headers go out before it ends)."""
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("woven ")]
    assert lines, "no weave was logged"
    return lines[-1]


async def test_timeout_yields_the_fallback_and_a_marker_comment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="weaver.access")
    cancelled: list[str] = []
    closed = asyncio.Event()
    routes = {
        "/": page('<weaver-include src="/slow" timeout="100ms">fallback</weaver-include>!'),
        "/slow": hanging(cancelled, closed),
    }
    async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
        status, body, headers = await get(url + "/")
        await closed.wait()  # the timed-out fetch's connection was closed
    assert cancelled == ["/slow"]
    assert status == 200
    assert re.fullmatch(r"<!-- weaver: fragment /slow [^>]*timeout[^>]*-->fallback!", body), body
    # The headers left before the fragment ended: it is left out of them (never reported
    # as something it was not); the access log has the final outcome.
    assert "/slow" not in headers["Server-Timing"]
    assert headers["Server-Timing"].startswith("shell;dur=")
    assert 'desc="/slow timeout";dur=' in final_timing(caplog)


async def test_a_failing_fragment_with_alt_yields_the_alt_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="weaver.access")

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    routes = {
        "/": page('<esi:include src="/broken" alt="/alt"/>.'),
        "/broken": broken,
        "/alt": page("alternative"),
    }
    async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
        status, body, _ = await get(url + "/")
    assert (status, body) == (200, "alternative.")
    assert 'desc="/broken alt"' in final_timing(caplog)


async def test_onerror_continue_yields_nothing_but_the_marker() -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503)

    routes = {"/": page('a<esi:include src="/broken" onerror="continue"/>b'), "/broken": broken}
    async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
        status, body, _ = await get(url + "/")
    assert status == 200
    assert re.fullmatch(r"a<!-- weaver: [^>]*-->b", body), body


async def test_absolute_include_to_another_port_is_refused_and_never_connected() -> None:
    connections: list[object] = []

    def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        writer.close()

    forbidden = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = forbidden.sockets[0].getsockname()[1]
    try:
        routes = {
            "/": page(
                f'<esi:include src="http://127.0.0.1:{port}/secret"/>'
                f'<weaver-include src="http://127.0.0.1:{port}/x">safe</weaver-include>'
            )
        }
        async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
            status, body, headers = await get(url + "/")
    finally:
        forbidden.close()
        await forbidden.wait_closed()
    assert status == 200
    assert connections == []
    assert body.endswith("safe")
    assert "refused" in headers["Server-Timing"]


async def test_client_disconnect_cancels_every_fragment_fetch() -> None:
    rec = Recorder()
    started = asyncio.Event()
    cancelled: list[str] = []
    all_cancelled = asyncio.Event()
    hang = hanging(cancelled, all_cancelled, count=5)

    async def hang_when_all_arrived(request: web.Request) -> web.Response:
        if len(rec.requests) >= 6:
            started.set()
        return await hang(request)  # type: ignore[return-value]  # it never returns

    routes: dict[str, Handler] = {f"/h/{i}": hang_when_all_arrived for i in range(5)}
    routes["/"] = page("".join(f'<esi:include src="/h/{i}"/>' for i in range(5)))
    async with asyncio.timeout(10), weaver_in_front_of(routes, rec) as url:
        async with aiohttp.ClientSession() as client:
            resp = await client.get(url + "/")
            await started.wait()
            resp.close()  # the visitor goes away mid-page
        await all_cancelled.wait()
    assert sorted(cancelled) == [f"/h/{i}" for i in range(5)]
    assert not any(p.startswith("/h/") for p in rec.finished)


async def test_shared_route_fragments_get_no_visitor_credentials_only_vary_headers() -> None:
    rec = Recorder()
    routes = {"/": page('<esi:include src="/frag"/>'), "/frag": page("f")}
    async with (
        asyncio.timeout(10),
        weaver_in_front_of(routes, rec, vary=["Accept-Language"], shared=True) as url,
    ):
        await get(
            url + "/",
            headers={
                "Cookie": "sid=secret",
                "Authorization": "Bearer x",
                "Accept-Language": "fr",
                "X-Custom": "1",
            },
        )
    for path in ("/", "/frag"):
        seen = {k.lower(): v for k, v in rec.headers[path].items()}
        assert "cookie" not in seen and "authorization" not in seen and "x-custom" not in seen
        assert seen["accept-language"] == "fr"
    shell = {k.lower(): v for k, v in rec.headers["/"].items()}
    # The peer is not in the key, so it is not in the canonical request either.
    assert "x-forwarded-for" not in shell
    assert shell["x-forwarded-proto"] == "http"
    assert shell["forwarded"].startswith("proto=http;host=")


async def test_primary_fragment_decides_status_and_links_are_merged() -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.Response(
            status=404,
            text="<p>no such product</p>",
            content_type="text/html",
            headers={"Link": "</p.css>; rel=preload; as=style"},
        )

    routes = {
        "/": page(
            '<esi:include src="/product" primary="true"/>', Link="</app.js>; rel=preload; as=script"
        ),
        "/product": missing,
    }
    async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
        async with aiohttp.ClientSession() as client, client.get(url + "/") as resp:
            body = await resp.text()
            links = resp.headers.getall("Link")
    assert resp.status == 404
    assert body == "<p>no such product</p>"
    assert links == ["</app.js>; rel=preload; as=script", "</p.css>; rel=preload; as=style"]


async def test_suspense_include_leaves_a_deterministic_placeholder() -> None:
    routes = {"/": page('<weaver-include src="/recs" mode="suspense">soon</weaver-include>')}
    async with asyncio.timeout(10), weaver_in_front_of(routes) as url:
        _, first, _ = await get(url + "/")
        _, second, _ = await get(url + "/", headers={"Cookie": "other=visitor"})
    assert first == second
    assert re.fullmatch(
        r'<weaver-slot id="w[0-9a-f]{12}" data-src="/recs">soon</weaver-slot>'
        r'<script type="module" src="/_weaver/client.js"></script>',
        first,
    ), first


async def test_non_html_passes_through_untouched() -> None:
    payload = bytes(range(256)) * 4096

    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/octet-stream")

    async def text_with_tag(request: web.Request) -> web.Response:
        return web.Response(text='<esi:include src="/x"/>', content_type="text/plain")

    async with (
        asyncio.timeout(10),
        weaver_in_front_of({"/blob": blob, "/t.txt": text_with_tag}) as url,
    ):
        async with aiohttp.ClientSession() as client:
            async with client.get(url + "/blob") as resp:
                assert resp.status == 200
                assert await resp.read() == payload
                assert resp.headers["Content-Length"] == str(len(payload))
            async with client.get(url + "/t.txt") as resp:
                assert await resp.text() == '<esi:include src="/x"/>'


async def test_unreachable_origin_gets_a_short_502_page(tmp_path: Path) -> None:
    from tests.integration.harness import weaver_config
    from weaver.proxy.app import build_app

    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    config = weaver_config(f"http://127.0.0.1:{port}", str(tmp_path))
    async with asyncio.timeout(10), serve_app(build_app(config)) as url:
        status, body, _ = await get(url + "/")
    assert status == 502
    assert 'could not get an answer from the origin "shop"' in body
    assert "Traceback" not in body
