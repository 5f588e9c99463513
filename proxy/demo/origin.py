"""The bundled demo origin's handlers: a small shop whose page is woven from fragments.

This module serves (routes, the carts, client events, the assistant's stream, sign-in); the
markup it serves is :mod:`weaver.proxy.demo.pages`.

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

from aiohttp import web

from weaver.proxy.demo.pages import (
    ANSWER,
    ANSWER_PICKS,
    CSS,
    HEADER,
    SHELL,
    account_page,
    card_html,
    cart_html,
    inline_page,
    products_html,
    recommendations_html,
)

RECOMMENDATIONS_DELAY_S = 1.2


async def shell(request: web.Request) -> web.Response:
    return web.Response(
        text=SHELL, content_type="text/html", headers={"Cache-Control": "max-age=60"}
    )


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
    return web.Response(text=inline_page(items), content_type="text/html")


ASSISTANT_TOKEN_S = 0.02
SEARCH_STEPS = 4


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


async def account(request: web.Request) -> web.Response:
    """A personal page: never cached (private), different for each visitor."""
    user = request.cookies.get(USER_COOKIE)
    items = request.app[CARTS].get(f"user:{user}", []) if user else []
    page = account_page(user, items)
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
