"""The bundled demo origin: a small shop whose page is woven from fragments.

- ``/``: the shell, with a header and a product list (blocking), recommendations (slow,
  suspense), the visitor's cart (personal, suspense) and a deals box whose fragment fails
  (the fallback shows).
- ``/fragments/*``: the fragments; ``/static/shop.css``; ``/_events``: client events.
"""

from __future__ import annotations

import asyncio
import html

from aiohttp import web

RECOMMENDATIONS_DELAY_S = 1.2

PRODUCTS = [
    ("p1", "Linen shirt", 39),
    ("p2", "Canvas tote", 19),
    ("p3", "Wool socks", 12),
    ("p4", "Rain jacket", 89),
    ("p5", "Leather belt", 29),
    ("p6", "Cotton scarf", 24),
]

SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Weaver demo shop</title>
<link rel="stylesheet" href="/static/shop.css">
</head>
<body>
<esi:include src="/fragments/header"/>
<main>
<section class="products">
<h2>Products</h2>
<weaver-include src="/fragments/products">Products are loading…</weaver-include>
</section>
<aside>
<section class="cart">
<h2>Your cart</h2>
<weaver-include src="/fragments/cart" mode="suspense" timeout="2s"><p class="muted">Loading your cart…</p></weaver-include>
</section>
<section class="recs">
<h2>Recommended for you</h2>
<weaver-include src="/fragments/recommendations" mode="suspense" timeout="3s"><p class="muted">Finding recommendations…</p></weaver-include>
</section>
<section class="deals">
<h2>Deals</h2>
<weaver-include src="/fragments/deals" timeout="300ms"><p class="muted">Deals are unavailable right now.</p></weaver-include>
</section>
</aside>
</main>
<esi:remove><p>This line shows only without Weaver.</p></esi:remove>
<footer>Served through Weaver · <a href="/_weaver/health">health</a></footer>
</body>
</html>
"""

CSS = """
body { font: 16px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #fafaf7; }
header { background: #2d3a4a; color: #fff; padding: 12px 24px; }
header h1 { margin: 0; font-size: 22px; }
main { display: grid; grid-template-columns: 2fr 1fr; gap: 24px; padding: 24px; }
.grid { display: grid; grid-template-columns: repeat(3, 1fr); gap: 12px; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 12px; }
.muted { color: #888; }
footer { padding: 12px 24px; color: #666; }
"""


async def shell(request: web.Request) -> web.Response:
    return web.Response(
        text=SHELL, content_type="text/html", headers={"Cache-Control": "max-age=60"}
    )


async def header(request: web.Request) -> web.Response:
    return web.Response(
        text="<header><h1>Weaver demo shop</h1><p>Fast first paint, live updates.</p></header>",
        content_type="text/html",
        headers={"Cache-Control": "max-age=300", "Surrogate-Key": "header"},
    )


async def products(request: web.Request) -> web.Response:
    cards = "".join(
        f'<div class="card" id="{pid}"><h3>{html.escape(name)}</h3><p>€{price}</p>'
        f'<button data-weaver-event="add-to-cart" data-product="{pid}">Add to cart</button>'
        "</div>"
        for pid, name, price in PRODUCTS
    )
    return web.Response(
        text=f'<div class="grid">{cards}</div>',
        content_type="text/html",
        headers={"Cache-Control": "max-age=60", "Surrogate-Key": "products"},
    )


async def recommendations(request: web.Request) -> web.Response:
    await asyncio.sleep(RECOMMENDATIONS_DELAY_S)
    items = "".join(f"<li>{html.escape(name)}</li>" for _, name, _ in PRODUCTS[:3])
    return web.Response(text=f"<ul>{items}</ul>", content_type="text/html")


async def cart(request: web.Request) -> web.Response:
    visitor = request.cookies.get("weaver_session", "")
    count = len(request.app[CARTS].get(visitor, []))
    return web.Response(
        text=f'<p class="cart-count">{count} item(s) in your cart</p>', content_type="text/html"
    )


async def deals(request: web.Request) -> web.Response:
    return web.Response(status=500, text="deals service is down")


async def css(request: web.Request) -> web.Response:
    return web.Response(
        text=CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


CARTS = web.AppKey("carts", dict[str, list[str]])


def build_origin() -> web.Application:
    """The demo shop as an aiohttp application."""
    app = web.Application()
    app[CARTS] = {}
    app.router.add_get("/", shell)
    app.router.add_get("/fragments/header", header)
    app.router.add_get("/fragments/products", products)
    app.router.add_get("/fragments/recommendations", recommendations)
    app.router.add_get("/fragments/cart", cart)
    app.router.add_get("/fragments/deals", deals)
    app.router.add_get("/static/shop.css", css)
    return app
