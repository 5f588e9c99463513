"""Locust scenarios for a Weaver deployment: visitors, session users and a publisher.

Run headless against the demo (``weaver demo`` prints its URL)::

    weaver demo --listen 127.0.0.1:8080 &
    WEAVER_PUBLISH_TOKEN=demo locust -f loadtests/locustfile.py --headless \\
        -u 50 -r 10 -t 2m --host http://127.0.0.1:8080

Against your own deployment, say which pages are which (comma-separated paths)::

    WEAVER_CACHED_PATHS=/,/about WEAVER_SUSPENSE_PATHS=/account \\
    WEAVER_CHANNELS=deals WEAVER_PUBLISH_TOKEN=... WEAVER_EVENT=add-to-cart \\
    locust -f loadtests/locustfile.py --host https://shop.example

The users:

- ``PageVisitor``: cached pages, and pages with personal suspense, as first visits (no
  cookie) and as returning visitors (the session cookie from their first page).
- ``SessionUser``: loads a suspense page, finds the socket the way the browser does (the
  ``CONFIG`` in ``/_weaver/client.js``: ``session.public_url`` or the page's host on the
  session port), opens it with the page's cookie, says hello, subscribes to the channels,
  sends events (``WEAVER_EVENT``, targeted at the slot of ``WEAVER_EVENT_TARGET``) and
  reports, as locust requests of type ``WS``: ``hello`` (connect to hello),
  ``slot <src>`` (page request start to the slot's arrival), ``message <channel>``
  (publish to arrival; the publisher stamps ``sent_at``: the clocks must agree),
  ``ack <event>`` and ``patch <src>`` (event sent to answer). A ``slot-error``, a refused
  ack or an unexpected close is a failure (but a slot-error of a fragment in
  ``WEAVER_FAILING_SLOTS``, default the demo's ``/fragments/deals``, which fails on purpose).
- ``Publisher`` (one user, only with ``WEAVER_PUBLISH_TOKEN`` set): POSTs to
  ``/_weaver/publish`` at ``WEAVER_PUBLISH_RATE`` messages per second.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import gevent  # type: ignore[import-untyped]  # locust's own; no stubs
import websocket  # websocket-client: plain sockets, cooperative under locust's monkey patch
from locust import HttpUser, between, constant_throughput, task
from locust.exception import StopUser


def _paths(name: str, default: str) -> list[str]:
    return [p.strip() for p in os.environ.get(name, default).split(",") if p.strip()]


CACHED_PATHS = _paths("WEAVER_CACHED_PATHS", "/static/shop.css,/fragments/header")
SUSPENSE_PATHS = _paths("WEAVER_SUSPENSE_PATHS", "/")
CHANNELS = _paths("WEAVER_CHANNELS", "deals,news")
PUBLISH_TOKEN = os.environ.get("WEAVER_PUBLISH_TOKEN", "")
PUBLISH_RATE = float(os.environ.get("WEAVER_PUBLISH_RATE", "2"))
# Fragments that fail on purpose (the demo's deals box): their slot-error is expected.
FAILING_SLOTS = _paths("WEAVER_FAILING_SLOTS", "/fragments/deals")
EVENT = os.environ.get("WEAVER_EVENT", "add-to-cart")
EVENT_TARGET = os.environ.get("WEAVER_EVENT_TARGET", "/fragments/cart")
EVENT_DATA: Any = json.loads(os.environ.get("WEAVER_EVENT_DATA", '{"product": "p1"}'))
SESSION_COOKIE = "weaver_session"

CONFIG_RE = re.compile(r"const CONFIG = (\{.*?\});")
SLOT_RE = re.compile(r'<weaver-slot id="([^"]+)"(?: data-src="([^"]*)")?')


class PageVisitor(HttpUser):
    """Cached pages and suspense pages; first visits and returning visitors."""

    weight = 3
    wait_time = between(0.5, 2)

    def on_start(self) -> None:
        self.first_visit()  # every visitor arrives once without a cookie

    @task(3)
    def cached_page(self) -> None:
        path = random.choice(CACHED_PATHS)
        self.client.get(path, name=f"{path} [cached]")

    @task(1)
    def first_visit(self) -> None:
        self.client.cookies.clear()
        path = random.choice(SUSPENSE_PATHS)
        with self.client.get(path, name=f"{path} [first visit]", catch_response=True) as resp:
            if SESSION_COOKIE not in resp.cookies:
                resp.failure("no session cookie on a first visit")

    @task(2)
    def returning_visit(self) -> None:
        path = random.choice(SUSPENSE_PATHS)
        self.client.get(path, name=f"{path} [returning]")


class SessionUser(HttpUser):
    """A browser tab: its page, then the session socket; events out, slots and pushes in."""

    weight = 2
    wait_time = between(1, 3)

    def on_start(self) -> None:
        self.ws: websocket.WebSocket | None = None
        self.reader: Any = None
        self.page_started = 0.0
        self.slots: dict[str, str] = {}  # slot id -> fragment src
        self.events_sent: dict[str, float] = {}
        self.last_event = 0.0
        self.load_page()
        self.connect()

    def on_stop(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            ws.close()
        if self.reader is not None:
            self.reader.kill(block=True, timeout=5)

    def fire(self, name: str, started: float, length: int = 0, error: str = "") -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.time() - started) * 1000,
            response_length=length,
            exception=RuntimeError(error) if error else None,
            context={},
        )

    def load_page(self) -> None:
        path = random.choice(SUSPENSE_PATHS)
        self.page_started = time.time()
        resp = self.client.get(path, name=f"{path} [session]")
        self.slots.update(dict(SLOT_RE.findall(resp.text)))

    def socket_url(self) -> str:
        """Where the browser finds the socket: the ``CONFIG`` in the client runtime."""
        script = str(self.client.get("/_weaver/client.js", name="/_weaver/client.js").text)
        match = CONFIG_RE.search(script)
        if match is None:
            raise StopUser("no CONFIG in /_weaver/client.js")
        url: str = json.loads(match.group(1))["ws"]
        return url.replace("{host}", urlsplit(str(self.host)).hostname or "127.0.0.1")

    def connect(self) -> None:
        url = self.socket_url()
        cookie = self.client.cookies.get(SESSION_COOKIE)
        started = time.time()
        try:
            ws = websocket.create_connection(
                url, cookie=f"{SESSION_COOKIE}={cookie}", timeout=30, enable_multithread=True
            )
            ws.send(json.dumps({"type": "hello", "last_seq": 0}))
            for channel in CHANNELS:
                ws.send(json.dumps({"type": "subscribe", "channel": channel}))
        except (OSError, websocket.WebSocketException) as exc:
            self.fire("connect", started, error=f"{type(exc).__name__}: {exc}")
            raise StopUser() from None
        self.ws = ws
        self.connect_started = started
        self.reader = gevent.spawn(self.read, ws)

    def read(self, ws: websocket.WebSocket) -> None:
        while self.ws is ws:
            try:
                raw = ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException) as exc:
                if self.ws is ws:  # not our own close
                    self.fire("closed", time.time(), error=f"{type(exc).__name__}: {exc}")
                return
            if not raw:
                continue
            self.handle(json.loads(raw), len(raw))

    def handle(self, msg: dict[str, Any], length: int) -> None:
        kind = msg.get("type")
        if kind == "hello":
            self.fire("hello", self.connect_started, length)
        elif kind in ("slot", "slot-error", "slot-done"):  # a streaming slot ends with done
            src = self.slots.get(str(msg.get("id")), str(msg.get("id")))
            is_failure = kind == "slot-error" and src not in FAILING_SLOTS
            error = f"slot-error: {msg.get('reason')}" if is_failure else ""
            self.fire(f"slot {src}", self.page_started, length, error)
        elif kind == "message":
            data = msg.get("data")
            if isinstance(data, dict) and isinstance(data.get("sent_at"), float):
                self.fire(f"message {msg.get('channel')}", data["sent_at"], length)
        elif kind == "ack":
            sent = self.events_sent.pop(str(msg.get("event")), None)
            if sent is not None:
                error = "" if msg.get("ok", True) else f"refused: {msg.get('error')}"
                self.fire(f"ack {EVENT}", sent, length, error)
        elif kind == "patch":
            src = self.slots.get(str(msg.get("id")), str(msg.get("id")))
            self.fire(f"patch {src}", self.last_event or time.time(), length)
        elif kind == "bye":
            self.fire("bye", time.time(), length, error="the server said bye")

    @task(3)
    def send_event(self) -> None:
        if self.ws is None:
            return
        target = next((s for s, src in self.slots.items() if src == EVENT_TARGET), EVENT_TARGET)
        event_id = uuid.uuid4().hex
        self.events_sent[event_id] = self.last_event = time.time()
        message = {"type": "event", "id": event_id, "name": EVENT, "target": target}
        self.ws.send(json.dumps({**message, "data": EVENT_DATA}))

    @task(1)
    def reload(self) -> None:
        """Another page in the same session: its suspense arrives on the open socket."""
        self.load_page()


class Publisher(HttpUser):
    """Pushes to the channels at a set rate (bearer ``WEAVER_PUBLISH_TOKEN``)."""

    fixed_count = 1
    wait_time = constant_throughput(PUBLISH_RATE)

    def on_start(self) -> None:
        if not PUBLISH_TOKEN:
            raise StopUser()

    @task
    def publish(self) -> None:
        channel = random.choice(CHANNELS)
        data = {"html": f"<b>load test {uuid.uuid4().hex[:6]}</b>", "sent_at": time.time()}
        with self.client.post(
            "/_weaver/publish",
            json={"channel": channel, "data": data},
            headers={"Authorization": f"Bearer {PUBLISH_TOKEN}"},
            name="/_weaver/publish",
            catch_response=True,
        ) as resp:
            if resp.status_code != 202:
                resp.failure(f"publish answered {resp.status_code}: {resp.text[:200]}")
