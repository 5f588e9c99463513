"""Weaver's own error pages (proxy/pages.py): short, escaped, never stored."""

from __future__ import annotations

from weaver.config.load import build_config
from weaver.proxy.errors import OriginError
from weaver.proxy.pages import error_page, origin_error_page


def test_an_error_page_is_short_html_that_no_cache_keeps() -> None:
    page = error_page(503, "Unavailable", "try again soon")
    assert page.status == 503
    assert page.content_type == "text/html"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Weaver-Cache"] == "BYPASS"
    assert page.text is not None
    assert "<title>503 Unavailable</title>" in page.text
    assert "<h1>503 Unavailable</h1><p>try again soon</p>" in page.text


def test_what_goes_into_an_error_page_is_escaped() -> None:
    page = error_page(400, "<b>Bad</b>", '<script>alert("x")</script>')
    assert page.text is not None
    assert "<script>" not in page.text and "<b>" not in page.text
    assert '&lt;script&gt;alert("x")&lt;/script&gt;' in page.text
    assert "&lt;b&gt;Bad&lt;/b&gt;" in page.text


def test_an_origin_failure_names_the_origin_and_the_reason_never_its_url() -> None:
    config = build_config(
        {
            "cache": {"dir": ""},
            "origin": [{"name": "shop", "url": "http://10.0.0.5:8080"}],
            "route": [{"path": "/", "origin": "shop"}],
        },
        "<test>",
    )
    (origin,) = config.origins
    timeout = origin_error_page(origin, OriginError(origin.url, "timed out", status=504))
    refused = origin_error_page(origin, OriginError(origin.url, "connection refused"))
    assert (timeout.status, refused.status) == (504, 502)
    assert timeout.text is not None and refused.text is not None
    assert "<h1>504 Gateway Timeout</h1>" in timeout.text
    assert "<h1>502 Bad Gateway</h1>" in refused.text
    assert '"shop" (connection refused)' in refused.text
    assert "10.0.0.5" not in refused.text
