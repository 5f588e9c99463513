"""The bundled demo origin: a small shop whose page is woven from fragments.

- ``/``: the shell, with a header and a product list (blocking), recommendations (slow,
  suspense), the visitor's cart (personal, suspense), a deals box whose fragment fails
  (suspense, so its fallback shows and the page is still stored), the shop assistant (a
  streaming suspense fragment with progress and nested product cards, and a Stop button)
  and a "what Weaver did" panel (cache status, paint time, each slot's arrival).
- ``/inline-demo``: the same page, which the demo's Weaver serves with
  ``suspense_delivery = "inline"`` (its slots follow the paint in the same response).
- ``/fragments/*``: the fragments; ``/static/shop.css``; ``/_events``: client events.
- ``/account`` (a login, a cookie), ``/api/cart`` (JSON): the app's personal side, which
  Weaver passes through with the visitor's own cookies (the page route is ``shared``).

A signed-in visitor's cart follows their ``demo_user`` cookie; an anonymous visitor's
cart lives as long as their Weaver session (one page view).
"""

from __future__ import annotations

import asyncio
import html
import json
import re

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
<weaver-subscribe channel="deals"/>
<weaver-subscribe channel="news"/>
<div class="flash" data-weaver-channel="deals"></div>
<div class="panel">session <b data-weaver-status="connection">no JavaScript</b> · transport <b data-weaver-status="transport">-</b> · seq <b data-weaver-status="seq">0</b></div>
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
<section class="news">
<h2>Live news</h2>
<ul class="ticker" data-weaver-channel="news" data-weaver-append></ul>
</section>
<section class="deals">
<h2>Deals</h2>
<weaver-include src="/fragments/deals" mode="suspense" timeout="300ms"><p class="muted">Deals are unavailable right now.</p></weaver-include>
</section>
</aside>
</main>
<section class="assistant">
<h2>Ask the shop assistant</h2>
<p class="question">“What should I pack for a rainy weekend walk?”</p>
<weaver-include src="/fragments/assistant" mode="suspense" stream timeout="2s"><p class="muted">The assistant is thinking…</p></weaver-include>
<button type="button" data-weaver-cancel="/fragments/assistant">Stop</button>
</section>
<section class="did">
<h2>What Weaver did</h2>
<ul id="weaver-did"><li>page: <b data-did="cache">-</b> · first byte <b data-did="ttfb">-</b> · painted <b data-did="paint">-</b></li></ul>
</section>
<script>
(() => {
  const did = document.getElementById("weaver-did");
  const set = (name, text) => { for (const el of did.querySelectorAll(`[data-did="${name}"]`)) el.textContent = text; };
  const nav = performance.getEntriesByType("navigation")[0];
  const cache = nav && (nav.serverTiming || []).find((t) => t.name === "cache");
  const fromBrowser = nav && nav.transferSize === 0 && nav.decodedBodySize > 0;
  set("cache", fromBrowser ? "BROWSER CACHE" : cache ? cache.description.toUpperCase() : "MISS");
  if (nav) set("ttfb", Math.round(nav.responseStart) + " ms");
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (e.name === "first-contentful-paint") set("paint", Math.round(e.startTime) + " ms");
  }).observe({ type: "paint", buffered: true });
  const rows = new Map();
  document.addEventListener("weaver:slot", (e) => {
    const { id, type, at, reason } = e.detail;
    let row = rows.get(id);
    if (!row) {
      row = document.createElement("li");
      const slot = document.getElementById(id);
      row.dataset.slot = (slot && slot.dataset.src) || id;
      row.dataset.first = Math.round(at);
      rows.set(id, row);
      did.append(row);
    }
    const end = type === "slot-append" || type === "slot-progress" ? "" : ` → ${reason || type} at ${Math.round(at)} ms`;
    row.textContent = `${row.dataset.slot}: first at ${row.dataset.first} ms${end || row.dataset.end || ""}`;
    if (end) row.dataset.end = end;
  });
})();
</script>
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
.flash:not(:empty) { background: #ffe45c; padding: 10px 24px; font-weight: 600; }
.panel { font-size: 13px; color: #555; padding: 6px 24px; background: #eef; }
button[data-weaver-pending] { opacity: .5; }
weaver-slot[data-state="slot"], weaver-slot[data-state="patch"] { animation: in .4s; }
.assistant, .did { margin: 0 24px 24px; background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 12px; }
.assistant .card { display: inline-block; margin: 4px; }
[data-weaver-progress] { display: flex; gap: 8px; align-items: center; color: #555; font-size: 14px; }
[data-weaver-progress] progress { width: 160px; }
weaver-slot[data-state="cancelled"]::after { content: " (stopped)"; color: #a00; }
#weaver-did { font: 13px/1.5 ui-monospace, monospace; }
@keyframes in { from { background: #fff7c0; } to { background: transparent; } }
"""


async def shell(request: web.Request) -> web.Response:
    return web.Response(
        text=SHELL, content_type="text/html", headers={"Cache-Control": "max-age=60"}
    )


HEADER = (
    "<header><h1>Weaver demo shop</h1><p>Fast first paint, live updates."
    ' <a href="/account">Your account</a></p></header>'
)


def products_html() -> str:
    cards = "".join(
        f'<div class="card" id="{pid}"><h3>{html.escape(name)}</h3><p>€{price}</p>'
        f'<button data-weaver-event="add-to-cart" data-product="{pid}" '
        f'data-weaver-target="/fragments/cart">Add to cart</button>'
        "</div>"
        for pid, name, price in PRODUCTS
    )
    return f'<div class="grid">{cards}</div>'


def recommendations_html() -> str:
    items = "".join(f"<li>{html.escape(name)}</li>" for _, name, _ in PRODUCTS[:3])
    return f"<ul>{items}</ul>"


async def header(request: web.Request) -> web.Response:
    return web.Response(
        text=HEADER,
        content_type="text/html",
        headers={"Cache-Control": "max-age=300", "Surrogate-Key": "header"},
    )


async def products(request: web.Request) -> web.Response:
    return web.Response(
        text=products_html(),
        content_type="text/html",
        headers={"Cache-Control": "max-age=60", "Surrogate-Key": "products"},
    )


async def recommendations(request: web.Request) -> web.Response:
    await asyncio.sleep(RECOMMENDATIONS_DELAY_S)
    return web.Response(text=recommendations_html(), content_type="text/html")


USER_COOKIE = "demo_user"


def cart_key(request: web.Request, session: str = "") -> str:
    """Whose cart: the signed-in user's (their cookie), else the Weaver session's."""
    user = request.cookies.get(USER_COOKIE)
    return f"user:{user}" if user else f"session:{session}"


def cart_html(items: list[str]) -> str:
    names = dict((pid, name) for pid, name, _ in PRODUCTS)
    rows = "".join(f"<li>{html.escape(names.get(pid, pid))}</li>" for pid in items)
    return f'<p class="cart-count">{len(items)} item(s) in your cart</p><ul>{rows}</ul>'


async def cart(request: web.Request) -> web.Response:
    items = request.app[CARTS].get(cart_key(request), [])
    return web.Response(text=cart_html(items), content_type="text/html")


async def events(request: web.Request) -> web.Response:
    """Client events from Weaver: ``{"session", "event"}``; answers patch the cart slot.
    Delivery is at least once, so events are deduplicated by id."""
    body = await request.json()
    session, event = body["session"], body["event"]
    seen = request.app[SEEN]
    if event["id"] not in seen and event["name"] == "add-to-cart":
        seen.add(event["id"])
        product = str((event.get("data") or {}).get("product", ""))
        request.app[CARTS].setdefault(cart_key(request, session), []).append(product)
    items = request.app[CARTS].get(cart_key(request, session), [])
    patches = {event["target"]: cart_html(items)} if event.get("target") else {}
    return web.json_response({"patches": patches})


async def inline(request: web.Request) -> web.Response:
    """The same page rendered by the origin alone, everything inline (the baseline)."""
    await asyncio.sleep(RECOMMENDATIONS_DELAY_S)
    items = request.app[CARTS].get(cart_key(request), [])
    parts = {
        "/fragments/header": HEADER,
        "/fragments/products": products_html(),
        "/fragments/cart": cart_html(items),
        "/fragments/recommendations": recommendations_html(),
        "/fragments/deals": '<p class="muted">Deals are unavailable right now.</p>',
        "/fragments/assistant": f"<p>{html.escape(ANSWER)}</p>"
        + "".join(card_html(pid) for pid in ANSWER_PICKS),
    }

    def render(match: re.Match[str]) -> str:
        return parts[match.group(1) or match.group(2)]

    page = INCLUDE.sub(render, SHELL)
    page = re.sub(r"<esi:remove>.*?</esi:remove>|<weaver-subscribe[^>]*/>", "", page)
    return web.Response(text=page, content_type="text/html")


INCLUDE = re.compile(
    r'<esi:include src="([^"]+)"/>|<weaver-include src="([^"]+)"[^>]*>.*?</weaver-include>'
)


ASSISTANT_TOKEN_S = 0.02
SEARCH_STEPS = 4
ANSWER = (
    "For a rainy weekend walk, keep dry first: the rain jacket sheds a downpour and packs "
    "small. Warm feet matter as much as a dry back, so take two pairs of wool socks. "
    "A canvas tote carries lunch and a spare layer. Here is what I would pick:"
)
ANSWER_PICKS = ("p4", "p3", "p2")


def sse(data: str, event: str = "") -> bytes:
    """One event-stream event (WHATWG HTML §9.2): ``data`` on as many lines as it has."""
    head = f"event: {event}\n" if event else ""
    return (head + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n").encode()


def progress(stage: str, percent: int, message: str) -> bytes:
    payload = {"stage": stage, "percent": percent, "message": message}
    return sse(json.dumps(payload), "progress")


async def assistant(request: web.Request) -> web.StreamResponse:
    """A simulated answer generator: deterministic text, a token every ~20 ms, progress
    stages, and product cards as blocking includes inside its stream (Weaver fetches them
    in parallel and splices them in order)."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    for step in range(SEARCH_STEPS):
        await response.write(
            progress(
                "searching the catalogue", step * 10, f"searching the catalogue ({step + 1}/4)"
            )
        )
        await asyncio.sleep(ASSISTANT_TOKEN_S * 3)
    await response.write(sse("<p>"))
    words = ANSWER.split(" ")
    for index, word in enumerate(words):
        percent = 40 + (index + 1) * 50 // len(words)
        if index % 8 == 0:
            await response.write(progress("writing the answer", percent, "writing the answer"))
        await response.write(sse(html.escape(word) + " "))
        await asyncio.sleep(ASSISTANT_TOKEN_S)
    await response.write(sse('</p><div class="picks">'))
    for pid in ANSWER_PICKS:
        await response.write(sse(f'<weaver-include src="/fragments/card/{pid}"></weaver-include>'))
    await response.write(progress("writing the answer", 100, "done"))
    await response.write(sse("</div>"))
    await response.write(sse("", "done"))
    await response.write_eof()
    return response


def card_html(pid: str) -> str:
    for known, name, price in PRODUCTS:
        if known == pid:
            return f'<div class="card pick"><h3>{html.escape(name)}</h3><p>€{price}</p></div>'
    return ""


async def card(request: web.Request) -> web.Response:
    await asyncio.sleep(0.05)
    return web.Response(
        text=card_html(request.match_info["pid"]),
        content_type="text/html",
        headers={"Cache-Control": "max-age=60"},
    )


async def deals(request: web.Request) -> web.Response:
    return web.Response(status=500, text="deals service is down")


async def css(request: web.Request) -> web.Response:
    return web.Response(
        text=CSS, content_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


ACCOUNT = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Your account</title><link rel="stylesheet" href="/static/shop.css"></head><body>
<header><h1>Your account</h1><p><a href="/">Back to the shop</a></p></header><main>{body}</main>
</body></html>"""


async def account(request: web.Request) -> web.Response:
    """A personal page: never cached (private), different for each visitor."""
    user = request.cookies.get(USER_COOKIE)
    if user:
        items = request.app[CARTS].get(f"user:{user}", [])
        body = (
            f"<p>Signed in as <b>{html.escape(user)}</b>.</p>{cart_html(items)}"
            '<form method="post" action="/account/logout"><button>Sign out</button></form>'
        )
    else:
        body = (
            '<form method="post" action="/account/login"><label>Name '
            '<input name="name" required></label> <button>Sign in</button></form>'
        )
    page = ACCOUNT.format(body=body)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "private"})


async def login(request: web.Request) -> web.Response:
    name = str((await request.post()).get("name", "")).strip()[:40]
    response = web.HTTPSeeOther("/account")
    if name:
        response.set_cookie(USER_COOKIE, name, httponly=True, samesite="Lax", path="/")
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/account")
    response.del_cookie(USER_COOKIE, path="/")
    raise response


async def api_cart(request: web.Request) -> web.Response:
    """The signed-in visitor's cart as JSON; 401 without the cookie."""
    user = request.cookies.get(USER_COOKIE)
    if not user:
        return web.json_response({"error": "sign in at /account"}, status=401)
    return web.json_response({"user": user, "items": request.app[CARTS].get(f"user:{user}", [])})


CARTS = web.AppKey("carts", dict[str, list[str]])
SEEN = web.AppKey("seen_events", set[str])


def build_origin() -> web.Application:
    """The demo shop as an aiohttp application."""
    app = web.Application()
    app[CARTS] = {}
    app[SEEN] = set()
    app.router.add_get("/", shell)
    app.router.add_get("/inline-demo", shell)  # the same page; Weaver delivers it inline
    app.router.add_get("/fragments/header", header)
    app.router.add_get("/fragments/products", products)
    app.router.add_get("/fragments/recommendations", recommendations)
    app.router.add_get("/fragments/cart", cart)
    app.router.add_get("/fragments/deals", deals)
    app.router.add_get("/fragments/assistant", assistant)
    app.router.add_get("/fragments/card/{pid}", card)
    app.router.add_get("/static/shop.css", css)
    app.router.add_post("/_events", events)
    app.router.add_get("/inline", inline)
    app.router.add_get("/account", account)
    app.router.add_post("/account/login", login)
    app.router.add_post("/account/logout", logout)
    app.router.add_get("/api/cart", api_cart)
    return app
