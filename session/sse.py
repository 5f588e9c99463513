"""``GET /_weaver/events``: the session stream as Server-Sent Events (server → client).

Same session, same log, same seq: the SSE ``id`` is the seq, so a browser's automatic
reconnect sends ``Last-Event-ID`` and resumes exactly where it was, with no gap and no
duplicate. The ``hello`` frame carries no ``id`` (an event without one keeps the last
event ID, WHATWG HTML §9.2.6), so a client cut off between the hello and the replay still
resumes from the last message it received. Events go the other way by POST. The
consumer's outbox overflows the same way (the stream is ended and the client resumes
from the log). A browser request from an Origin that may not use the session gets 403.
``?session=ID`` (the session the client expects) that is not the cookie's session makes
it a new client of the cookie's session, as a WebSocket hello's ``session`` does.
"""

from __future__ import annotations

from aiohttp import web

from weaver.session import auth
from weaver.session.errors import SessionError
from weaver.session.hub import SessionHub
from weaver.session.messages import Hello, encode

HUB_KEY = web.AppKey("session_hub", SessionHub)


def origin_refusal(request: web.Request, hub: SessionHub) -> web.Response | None:
    """403 for a browser request whose ``Origin`` may not use the session, else None."""
    origin = request.headers.get("Origin")
    if auth.is_origin_allowed(origin, request.headers.get("Host"), hub.config.allowed_origins):
        return None
    return web.json_response(
        {"error": "this Origin may not use the Weaver session (see session.allowed_origins)"},
        status=403,
    )


def _last_seq(request: web.Request) -> int:
    for value in (request.headers.get("Last-Event-ID"), request.query.get("last_seq")):
        if value is not None and value.strip().isdigit():
            return int(value.strip())
    return 0


async def events_handler(request: web.Request) -> web.StreamResponse:
    hub = request.app[HUB_KEY]
    refused = origin_refusal(request, hub)
    if refused is not None:
        return refused
    token = auth.token_from_cookie_header(request.headers.get("Cookie")) or request.query.get(
        "token"
    )
    if not token:
        return web.json_response({"error": "no session cookie"}, status=401)
    try:
        session_id = auth.verify(hub.config.secret, token, hub.wall_clock())
    except SessionError as exc:
        return web.json_response({"error": exc.reason}, status=exc.status)
    last_seq = _last_seq(request)
    expected = request.query.get("session")
    if expected is not None and expected != session_id:
        last_seq = 0  # it counts in another session's log: as over WebSocket (server.py)
    try:
        session = await hub.load(session_id)
    except SessionError as exc:  # TryAgain: 503, the browser retries
        return web.json_response({"error": exc.reason}, status=exc.status)
    outbox, resumed, hello_seq = await hub.attach(session, last_seq)
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        hello = encode(Hello(session_id, resumed), hello_seq)
        await response.write(b"data: %s\n\n" % hello)  # no id: see the module docstring
        while True:
            item = await outbox.get()
            if item is None:  # fell behind: end the stream; the browser resumes
                break
            seq, message = item
            await response.write(b"id: %d\ndata: %s\n\n" % (seq, message))
            if outbox.is_end(message):  # the node's bye: close, the browser resumes elsewhere
                break
        await response.write_eof()
        return response
    finally:
        hub.detach(session, outbox)
