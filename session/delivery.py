"""Client events to the origin's events endpoint: in order, each at least once, acked.

Overflow policy PAUSE_READING: a session's inbound queue holds ``max_pending`` events;
the consumer's reader awaits :meth:`EventDelivery.offer` while it is full. One worker
per session POSTs them in order (retried on 5xx and network errors with the same id: the
origin dedupes) and answers each with an ``ack``; the origin's answer may patch slots
and publish to channels.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import orjson

from weaver.session.live import Session
from weaver.session.messages import Ack, ClientEvent, Patch

log = logging.getLogger(__name__)

EVENT_RETRIES_S = (0.1, 0.3, 0.9)  # waits before the 2nd, 3rd and 4th delivery attempt
IDLE_S = 5.0  # a worker with nothing to do ends; the next event starts another

Spawn = Callable[[Coroutine[Any, Any, None], set[asyncio.Task[None]]], asyncio.Task[None]]
Publish = Callable[[str, Any], Awaitable[int]]


class EventDelivery:
    def __init__(
        self,
        spawn: Spawn,
        publish: Publish,
        *,
        max_pending: int,
        timeout_s: float,
    ) -> None:
        self._spawn = spawn
        self._publish = publish
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.http: aiohttp.ClientSession | None = None  # set while the hub runs

    def offer(self, session: Session, event: ClientEvent) -> Awaitable[None]:
        """Queue ``event`` for the origin; the awaitable waits while the queue is full."""
        if session.events is None:
            session.events = asyncio.Queue(maxsize=self.max_pending)
        if session.event_worker is None or session.event_worker.done():
            session.event_worker = self._spawn(self._deliver(session), session.tasks)
        return session.events.put(event)  # PAUSE_READING: the reader awaits this

    async def _deliver(self, session: Session) -> None:
        """POST the session's events to the origin, in order, each at least once."""
        assert session.events is not None
        while True:
            try:
                event = await asyncio.wait_for(session.events.get(), timeout=IDLE_S)
            except TimeoutError:
                return  # idle: the next event starts a new worker
            ok, error = await self._post(session, event)
            session.emit(Ack(event.id, ok, error))

    async def _post(self, session: Session, event: ClientEvent) -> tuple[bool, str | None]:
        events_url, http = session.state.events_url, self.http
        if not events_url or http is None:
            return False, "no events endpoint is configured"
        body = orjson.dumps(
            {
                "session": session.id,
                "event": {
                    "id": event.id,
                    "name": event.name,
                    "target": event.target,
                    "data": event.data,
                },
            }
        )
        headers = {"Content-Type": "application/json"}
        if session.state.cookie:
            headers["Cookie"] = session.state.cookie
        error = "origin unreachable"
        for attempt, wait_s in enumerate((0.0, *EVENT_RETRIES_S)):
            if wait_s:
                await asyncio.sleep(wait_s)
            try:
                async with asyncio.timeout(self.timeout_s):
                    async with http.post(events_url, data=body, headers=headers) as resp:
                        if resp.status >= 500:
                            error = f"origin answered {resp.status}"
                            continue  # retried with the same id: the origin dedupes
                        if resp.status >= 400:
                            return False, f"origin answered {resp.status}"
                        answer = await resp.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                error = f"origin unreachable ({type(exc).__name__})"
                log.info("event %s attempt %d failed: %s", event.id, attempt + 1, error)
                continue
            await self._apply_answer(session, answer)
            return True, None
        return False, error

    async def _apply_answer(self, session: Session, answer: bytes) -> None:
        """The origin's answer may patch slots and publish to channels."""
        if not answer.strip():
            return
        try:
            parsed = orjson.loads(answer)
        except orjson.JSONDecodeError:
            log.warning("events endpoint answered non-JSON; ignored")
            return
        if not isinstance(parsed, dict):
            return
        patches = parsed.get("patches") or {}
        if isinstance(patches, dict):
            for slot, html in patches.items():
                if isinstance(slot, str) and isinstance(html, str):
                    session.set_slot(Patch(slot, html))
        for item in parsed.get("publish") or ():
            if isinstance(item, dict) and isinstance(item.get("channel"), str):
                await self._publish(item["channel"], item.get("data"))
