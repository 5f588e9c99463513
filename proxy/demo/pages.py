"""The demo shop's markup (pure): its page, fragments, stylesheet and account page as text.

:mod:`weaver.proxy.demo.origin` serves these; here they are only rendered, with no I/O: the
shell with its includes (:data:`SHELL`), each fragment's HTML, and the same page with every
include rendered in place (:func:`inline_page`, the origin-only baseline).
"""

from __future__ import annotations

import html
import re

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


def cart_html(items: list[str]) -> str:
    names = dict((pid, name) for pid, name, _ in PRODUCTS)
    rows = "".join(f"<li>{html.escape(names.get(pid, pid))}</li>" for pid in items)
    return f'<p class="cart-count">{len(items)} item(s) in your cart</p><ul>{rows}</ul>'


def card_html(pid: str) -> str:
    for known, name, price in PRODUCTS:
        if known == pid:
            return f'<div class="card pick"><h3>{html.escape(name)}</h3><p>€{price}</p></div>'
    return ""


ANSWER = (
    "For a rainy weekend walk, keep dry first: the rain jacket sheds a downpour and packs "
    "small. Warm feet matter as much as a dry back, so take two pairs of wool socks. "
    "A canvas tote carries lunch and a spare layer. Here is what I would pick:"
)
ANSWER_PICKS = ("p4", "p3", "p2")


INCLUDE = re.compile(
    r'<esi:include src="([^"]+)"/>|<weaver-include src="([^"]+)"[^>]*>.*?</weaver-include>'
)


def inline_page(cart_items: list[str]) -> str:
    """The shell with every include rendered in place, as an origin alone would send it."""
    parts = {
        "/fragments/header": HEADER,
        "/fragments/products": products_html(),
        "/fragments/cart": cart_html(cart_items),
        "/fragments/recommendations": recommendations_html(),
        "/fragments/deals": '<p class="muted">Deals are unavailable right now.</p>',
        "/fragments/assistant": f"<p>{html.escape(ANSWER)}</p>"
        + "".join(card_html(pid) for pid in ANSWER_PICKS),
    }

    def render(match: re.Match[str]) -> str:
        return parts[match.group(1) or match.group(2)]

    page = INCLUDE.sub(render, SHELL)
    return re.sub(r"<esi:remove>.*?</esi:remove>|<weaver-subscribe[^>]*/>", "", page)


ACCOUNT = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Your account</title><link rel="stylesheet" href="/static/shop.css"></head><body>
<header><h1>Your account</h1><p><a href="/">Back to the shop</a></p></header><main>{body}</main>
</body></html>"""


def account_page(user: str | None, cart_items: list[str]) -> str:
    """The account page: the signed-in ``user``'s cart and a sign-out, else a sign-in form."""
    if user:
        body = (
            f"<p>Signed in as <b>{html.escape(user)}</b>.</p>{cart_html(cart_items)}"
            '<form method="post" action="/account/logout"><button>Sign out</button></form>'
        )
    else:
        body = (
            '<form method="post" action="/account/login"><label>Name '
            '<input name="name" required></label> <button>Sign in</button></form>'
        )
    return ACCOUNT.format(body=body)
