"""Bad include sources in real pages: refused with the fallback, never a broken page."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiohttp import web

from tests.integration.harness import Recorder, html, weaver_in_front_of
from tests.servers import Handler


def page(text: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return html(text)

    return handler


@pytest.mark.parametrize(
    "src",
    ["/f&#13;&#10;X-Evil: 1", "/f\r\nX-Evil: 1", "/f\x00\x7fx", "/" + "f" * 3000],
    ids=["crlf-entities", "crlf", "nul-del", "3001-chars"],
)
async def test_an_include_with_a_control_character_or_too_long_gets_its_fallback(
    src: str,
) -> None:
    recorder = Recorder()
    routes = {
        "/": page(f'a<weaver-include src="{src}">fallback</weaver-include>b'),
        "/f": page("F"),
    }
    async with asyncio.timeout(10), weaver_in_front_of(routes, recorder) as url:
        async with aiohttp.ClientSession() as client, client.get(url + "/") as resp:
            status, body = resp.status, await resp.text()
            timing = resp.headers.get("Server-Timing", "")
    assert status == 200
    assert re.fullmatch(r"a<!-- weaver: fragment [^>]* cut \(refused\) -->fallbackb", body), body
    assert "X-Evil" not in resp.headers
    assert "refused" in timing
    assert recorder.requests == ["/"]


async def test_esi_markup_weaver_does_not_implement_is_removed_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    routes = {
        "/": page(
            'a<esi:vars>$(HTTP_HOST)</esi:vars>b<esi:incl src="/f"/>c<esi:include src="/n"/>'
        ),
        "/n": page('<esi:foo>x</esi:foo><![CDATA[<esi:include src="/f"/>]]>'),
        "/f": page("F"),
    }
    recorder = Recorder()
    async with asyncio.timeout(10), weaver_in_front_of(routes, recorder) as url:
        async with aiohttp.ClientSession() as client, client.get(url + "/") as resp:
            body = await resp.text()
    assert body == 'a$(HTTP_HOST)bcx<![CDATA[<esi:include src="/f"/>]]>'
    assert "/f" not in recorder.requests
    removed = [r for r in caplog.records if "ESI markup removed" in r.getMessage()]
    assert len(removed) == 1  # one line for the page, its fragment's drops included
    assert "esi:foo" in removed[0].getMessage() and "esi:vars" in removed[0].getMessage()
