"""The session's HTTP endpoints on the main listener: publish, presence, SSE events."""

from __future__ import annotations

import hmac
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from weaver.session import auth
from weaver.session.errors import SessionError
from weaver.session.hub import SessionHub
from weaver.session.messages import MAX_MESSAGE_BYTES, Cancel, ClientEvent, parse_client_message
from weaver.session.protocol import channel_bytes_refusal
from weaver.session.sse import HUB_KEY, events_handler, origin_refusal

MAX_PUBLISH_BYTES = 64 * 1024


def _authorized(request: web.Request, token: str) -> bool:
    if not token:
        return False  # no token configured: closed, not open
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip(), token)


def _unauthorized() -> web.Response:
    return web.json_response(
        {"error": "a valid 'Authorization: Bearer <publish_token>' header is required"},
        status=401,
        headers={"WWW-Authenticate": 'Bearer realm="weaver"'},
    )


def _bad(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def publish_handler(request: web.Request) -> web.Response:
    """``{"channel": c, "data": …}`` or ``{"session": s, "data": …}`` → 202 delivered_to."""
    hub = request.app[HUB_KEY]
    if not _authorized(request, hub.config.publish_token):
        return _unauthorized()
    raw = await request.content.read(MAX_PUBLISH_BYTES + 1)
    if len(raw) > MAX_PUBLISH_BYTES:
        return _bad(f"the body is over {MAX_PUBLISH_BYTES} bytes")
    try:
        body: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _bad("the body is not JSON")
    if not isinstance(body, dict) or "data" not in body:
        return _bad('the body must be {"channel"|"session": …, "data": …}')
    channel, session = body.get("channel"), body.get("session")
    if isinstance(channel, str) and channel and session is None:
        too_long = channel_bytes_refusal(hub.config, channel)
        if too_long is not None:
            return _bad(too_long)
        delivered = await hub.publish_channel(channel, body["data"])
    elif isinstance(session, str) and session and channel is None:
        delivered = await hub.publish_to_session(session, body["data"])
    else:
        return _bad('give exactly one of "channel" or "session", a non-empty string')
    return web.json_response({"delivered_to": delivered}, status=202)


async def presence_handler(request: web.Request) -> web.Response:
    hub = request.app[HUB_KEY]
    if not _authorized(request, hub.config.publish_token):
        return _unauthorized()
    channel = request.query.get("channel", "")
    if not channel:
        return _bad("give ?channel=")
    return web.json_response({"channel": channel, "sessions": hub.presence(channel)})


CLIENT_JS = (Path(__file__).parent / "client.js").read_text()


async def client_js_handler(request: web.Request) -> web.Response:
    """The client runtime, with where to find the session: ``session.public_url``, else
    the page's host on the session listener's port."""
    hub = request.app[HUB_KEY]
    ws_url = hub.config.public_url or f"ws://{{host}}:{hub.port}/"
    config = orjson.dumps({"ws": ws_url, "sse": "/_weaver/events"}).decode()
    body = CLIENT_JS.replace("__WEAVER_CONFIG__", config)
    return web.Response(
        text=body,
        content_type="text/javascript",
        headers={"Cache-Control": "public, max-age=300"},
    )


async def post_event_handler(request: web.Request) -> web.Response:
    """``POST /_weaver/events``: a client event from a visitor on SSE (no WebSocket)."""
    hub = request.app[HUB_KEY]
    refused = origin_refusal(request, hub)
    if refused is not None:
        return refused
    token = auth.token_from_cookie_header(request.headers.get("Cookie"))
    try:
        session_id = auth.verify(hub.config.secret, token or "", hub.wall_clock())
        message = parse_client_message(await request.content.read(MAX_MESSAGE_BYTES + 1))
    except SessionError as exc:  # TokenError: 401; a bad message: 400
        return web.json_response({"error": exc.reason}, status=exc.status)
    if isinstance(message, Cancel):  # an SSE client's Stop button
        session = hub.sessions.get(session_id)
        is_cancelled = session is not None and session.streams.cancel(message.id)
        return web.json_response({"cancelled": is_cancelled}, status=202)
    if not isinstance(message, ClientEvent):
        return _bad("only event and cancel messages may be POSTed")
    try:
        session = await hub.load(session_id)
    except SessionError as exc:  # TryAgain: 503
        return web.json_response({"error": exc.reason}, status=exc.status)
    await hub.offer_event(session, message)
    return web.json_response({"queued": message.id}, status=202)


def add_routes(app: web.Application, hub: SessionHub) -> None:
    app[HUB_KEY] = hub
    app.router.add_post("/_weaver/publish", publish_handler)
    app.router.add_get("/_weaver/presence", presence_handler)
    app.router.add_get("/_weaver/events", events_handler)
    app.router.add_post("/_weaver/events", post_event_handler)
    app.router.add_get("/_weaver/client.js", client_js_handler)
