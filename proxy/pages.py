"""Weaver's own error pages: short, clear HTML; never a traceback (details go to the log)."""

from __future__ import annotations

import html

from aiohttp import web

from weaver.config.schema import OriginConfig
from weaver.proxy.errors import OriginError


def error_page(status: int, title: str, detail: str) -> web.Response:
    """A short, clear HTML page; never a traceback (details go to the log)."""
    body = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{status} {html.escape(title)}</title></head><body>"
        f"<h1>{status} {html.escape(title)}</h1><p>{html.escape(detail, quote=False)}</p>"
        "<hr><p>Weaver</p></body></html>"
    )
    return web.Response(
        status=status,
        text=body,
        content_type="text/html",
        headers={"X-Weaver-Cache": "BYPASS", "Cache-Control": "no-store"},
    )


def origin_error_page(origin: OriginConfig, exc: OriginError) -> web.Response:
    title = "Gateway Timeout" if exc.status == 504 else "Bad Gateway"
    detail = f'Weaver could not get an answer from the origin "{origin.name}" ({exc.reason}).'
    return error_page(exc.status, title, detail)
