"""The demo shop's markup (proxy/demo/pages.py): the woven shell and its inline baseline."""

from __future__ import annotations

from weaver.proxy.demo.pages import (
    ANSWER_PICKS,
    HEADER,
    PRODUCTS,
    SHELL,
    account_page,
    cart_html,
    inline_page,
)


def test_the_shell_includes_every_fragment_the_origin_serves() -> None:
    for src in ("header", "products", "cart", "recommendations", "deals", "assistant"):
        assert f'src="/fragments/{src}"' in SHELL


def test_the_inline_page_renders_every_include_in_place_and_drops_weaver_markup() -> None:
    page = inline_page(["p1", "p1"])
    assert "<esi:include" not in page and "<weaver-include" not in page
    assert "<weaver-subscribe" not in page and "<esi:remove>" not in page
    assert HEADER in page
    assert cart_html(["p1", "p1"]) in page
    assert '<p class="cart-count">2 item(s) in your cart</p>' in page
    assert all(f'id="{pid}"' in page for pid, _, _ in PRODUCTS)
    assert page.count('class="card pick"') == len(ANSWER_PICKS)
    assert "Deals are unavailable right now." in page


def test_the_cart_escapes_names_and_shows_unknown_products_by_id() -> None:
    assert cart_html(["p2", "<x>"]) == (
        '<p class="cart-count">2 item(s) in your cart</p><ul><li>Canvas tote</li>'
        "<li>&lt;x&gt;</li></ul>"
    )


def test_the_account_page_signs_in_a_visitor_and_shows_a_user_their_cart() -> None:
    anonymous = account_page(None, [])
    assert 'action="/account/login"' in anonymous and "Signed in" not in anonymous
    signed_in = account_page("<ann>", ["p3"])
    assert "Signed in as <b>&lt;ann&gt;</b>." in signed_in
    assert "<li>Wool socks</li>" in signed_in and 'action="/account/logout"' in signed_in
