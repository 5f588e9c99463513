"""The Redis bus: pub/sub between nodes, session and channel logs in Redis Streams.

What Redis holds (keys, pub/sub, the scripts that change them): session/redis_layout.py.

Every call runs under ``bus.timeout``. A call that fails marks the bus down: sessions
deliver locally (logged once), and the reader reconnects with exponential backoff and
jitter; when Redis answers again, the sessions this node kept are written back
(:meth:`seed`) and delivery goes through Redis again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from weaver.config.schema import BusConfig
from weaver.session.bus import (
    BusUnavailable,
    ChannelMessage,
    Emit,
    Handler,
    Op,
    PurgeHandler,
    Replay,
    SessionHandler,
    SharedLog,
    StoredSession,
    UpHandler,
)
from weaver.session.redis_layout import (
    CHANNELS,
    PURGES,
    SCRIPTS,
    SESSIONS,
    channel_key,
    log_key,
    parse_channel_payload,
    session_key,
)
from weaver.session.redis_writes import WriteQueue, emit_args

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["RedisBus", "channel_key", "log_key", "session_key"]

BACKOFF_FIRST_S = 0.05
BACKOFF_MAX_S = 5.0
# Calls in flight at once, each on a connection of redis-py's pool (100; the reader's
# subscription and the script loading take theirs): past it a call waits its turn here,
# not counted against ``bus.timeout``. Without it, 10,000 sessions attaching at once
# (a replay each) took more connections than the pool holds: MaxConnectionsError
# marked a healthy Redis down and sessions went to local delivery.
CALLS_MAX = 64


class RedisBus:
    """The bus and shared log over one Redis (``bus.url``: redis://, rediss://, with a
    password as ``redis://:PASSWORD@host``). Never raises for an outage: see the module."""

    def __init__(self, config: BusConfig) -> None:
        self.config = config
        self.shared: SharedLog | None = self
        self.node_id = secrets.token_hex(8)
        self.ttl_s = max(1, int(config.session_ttl_s))
        self._redis = aioredis.Redis.from_url(
            config.url,
            socket_timeout=config.timeout_s,
            socket_connect_timeout=config.timeout_s,
            retry_on_timeout=False,
            retry=None,
        )
        self._shas: dict[str, str] = {}
        self._is_up = False
        self._down = asyncio.Event()
        self._handler: Handler | None = None
        self._on_session: SessionHandler | None = None
        self._on_up: UpHandler | None = None
        self._on_purge: PurgeHandler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None
        self._started = asyncio.Event()
        self._up = asyncio.Event()  # set while up, after the sessions were written back
        self._calls = asyncio.Semaphore(CALLS_MAX)
        self._write_queue = WriteQueue(
            self._call,
            lambda: self._redis.pipeline(transaction=False),
            self._evalsha,
            config,
            self.ttl_s,
            self._tasks,
        )

    @property
    def is_up(self) -> bool:
        return self._is_up

    # lifecycle

    async def start(
        self,
        handler: Handler,
        *,
        on_session: SessionHandler | None = None,
        on_up: UpHandler | None = None,
    ) -> None:
        """Start the reader; waits (at most ``bus.timeout``) for the first connection,
        and returns either way: Redis down at start means local delivery until it is up."""
        self._handler, self._on_session, self._on_up = handler, on_session, on_up
        self._reader = asyncio.get_running_loop().create_task(self._read_forever())
        try:
            async with asyncio.timeout(self.config.timeout_s * 2):
                await self._started.wait()
        except TimeoutError:
            log.warning("bus: Redis did not answer at start; sessions deliver locally for now")

    async def stop(self) -> None:
        tasks = [t for t in (self._reader, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._is_up = False
        try:
            async with asyncio.timeout(self.config.timeout_s):
                await self._redis.aclose()
        except (RedisError, OSError, TimeoutError):
            pass

    async def wait_up(self) -> None:
        """Until the bus is up (connected, subscribed, this node's sessions written back)."""
        await self._up.wait()

    def on_purge(self, handler: PurgeHandler) -> None:
        self._on_purge = handler

    # the reader: pub/sub, up and down

    async def _read_forever(self) -> None:
        attempt = 0
        while True:
            pubsub = self._redis.pubsub()
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    if attempt:
                        # After an outage every pooled connection is to the Redis that
                        # went away; redis-py may hand one out unchecked (its pool skips
                        # the check while maintenance notifications are "auto"), so the
                        # first calls once Redis is back would fail and mark it down
                        # again, sending sessions to local delivery for nothing.
                        await self._redis.connection_pool.disconnect()
                    await self._load_scripts()
                    await pubsub.subscribe(SESSIONS, CHANNELS, PURGES)
                    confirmed = 0
                    while confirmed < 3:
                        message = await pubsub.get_message(timeout=self.config.timeout_s)
                        if message is not None and message["type"] == "subscribe":
                            confirmed += 1
                self._down.clear()
                self._is_up = True
                if attempt:
                    log.warning("bus: Redis is back; sessions go through it again")
                attempt = 0
                if self._on_up is not None:
                    await self._on_up()
                self._up.set()
                self._started.set()
                while not self._down.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    if message is not None and message["type"] == "message":
                        self._dispatch(message["channel"], message["data"])
            except (RedisError, OSError, TimeoutError, BusUnavailable) as exc:
                self._mark_down(exc)
            finally:
                self._is_up = False
                self._up.clear()
                self._started.set()  # start() waits for the first attempt only
                try:
                    async with asyncio.timeout(self.config.timeout_s):
                        await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # redis-py < 8.2 is untyped here
                except (RedisError, OSError, TimeoutError):
                    pass
            attempt += 1
            delay_s = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(attempt, 10))
            await asyncio.sleep(delay_s * random.uniform(0.5, 1.0))  # jitter: no herd

    def _mark_down(self, exc: BaseException) -> None:
        if self._is_up or not self._down.is_set():
            log.warning(
                "bus: Redis unavailable (%s); sessions deliver locally, reconnecting",
                type(exc).__name__,
            )
        self._is_up = False
        self._down.set()

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        try:
            if channel == SESSIONS.encode():
                session_id, _, rest = data.partition(b" ")
                seq, _, message = rest.partition(b" ")
                if self._on_session is not None and seq.isdigit():
                    self._on_session(session_id.decode(), int(seq), message)
            elif channel == CHANNELS.encode():
                parsed = parse_channel_payload(data)
                if parsed is not None and self._handler is not None:
                    self._handler(parsed)
            elif channel == PURGES.encode():
                node, _, body = data.partition(b" ")
                if node.decode() != self.node_id and self._on_purge is not None:
                    self._spawn(self._purge(body))
        except Exception:  # a handler's bug must not stop the node's bus
            log.exception("bus: a %s message could not be handled", channel.decode())

    async def _purge(self, body: bytes) -> None:
        assert self._on_purge is not None
        try:
            await self._on_purge(body)
        except Exception:
            log.exception("bus: a purge from another node failed")

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # calls, each under the timeout

    async def _load_scripts(self) -> None:
        for name, text in SCRIPTS.items():
            self._shas[name] = await self._redis.script_load(text)

    async def _call(self, run: Callable[[], Awaitable[T]]) -> T:
        if not self._is_up:
            raise BusUnavailable("the bus is down")
        async with self._calls:
            return await self._call_now(run)

    async def _call_now(self, run: Callable[[], Awaitable[T]]) -> T:
        if not self._is_up:  # it went down while this call waited its turn
            raise BusUnavailable("the bus is down")
        try:
            async with asyncio.timeout(self.config.timeout_s):
                try:
                    return await run()
                except NoScriptError:  # Redis restarted between two calls
                    await self._load_scripts()
                    return await run()
        except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as exc:
            self._mark_down(exc)
            raise BusUnavailable(f"Redis: {type(exc).__name__}") from exc
        except RedisError as exc:
            log.error("bus: Redis refused a call: %s", exc)
            raise BusUnavailable(f"Redis refused: {type(exc).__name__}") from exc

    def _evalsha(self, target: Any, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return target.evalsha(self._shas[name], len(keys), *keys, *args)

    # the bus

    async def publish(self, channel: str, payload: bytes) -> None:
        args = (channel, payload, self.config.channel_history, self.ttl_s)
        try:
            await self._call(
                lambda: self._evalsha(self._redis, "publish", [channel_key(channel)], args)
            )
        except BusUnavailable:
            if self._handler is not None:  # this node's sessions still get it
                self._handler(ChannelMessage(channel, payload))

    async def publish_purge(self, body: bytes) -> bool:
        data = self.node_id.encode() + b" " + body
        try:
            await self._call(lambda: self._redis.publish(PURGES, data))
        except BusUnavailable:
            log.warning("bus: a purge could not reach the other nodes (Redis unavailable)")
            return False
        return True

    # the shared log

    async def write(self, session_id: str, ops: Sequence[Op]) -> list[int]:
        """Apply ``ops`` in order (batched with other sessions' writes:
        session/redis_writes.py); the seq of each message, 0 for the rest."""
        if not self._is_up:
            raise BusUnavailable("the bus is down")
        return await self._write_queue.submit(session_id, ops)

    async def emit_if_exists(self, session_id: str, emit: Emit) -> bool:
        keys = [session_key(session_id), log_key(session_id)]
        args = emit_args(session_id, emit, self.config, self.ttl_s, must_exist=True)
        seq = await self._call(lambda: self._evalsha(self._redis, "emit", keys, args))
        return int(seq) > 0

    async def replay(self, session_id: str, last_seq: int) -> Replay:
        keys = [session_key(session_id), log_key(session_id)]
        raw = await self._call(
            lambda: self._evalsha(self._redis, "replay", keys, [last_seq, self.ttl_s])
        )
        entries = tuple((int(raw[i]), bytes(raw[i + 1])) for i in range(2, len(raw), 2))
        return Replay(seq=int(raw[0]), is_reset=bool(int(raw[1])), entries=entries)

    async def load(self, session_id: str) -> StoredSession | None:
        raw: Any = await self._call(lambda: self._redis.hgetall(session_key(session_id)))
        if not raw:
            return None
        fields: dict[str, bytes] = {bytes(k).decode(): bytes(v) for k, v in raw.items()}
        channels = orjson.loads(fields["channels"]) if "channels" in fields else []
        return StoredSession(
            seq=int(fields.get("seq", b"0")),
            cookie=fields["cookie"].decode() if fields.get("cookie") else None,
            events_url=fields["events"].decode() if fields.get("events") else None,
            channels=tuple(c for c in channels if isinstance(c, str)),
            slots={k[5:]: v for k, v in fields.items() if k.startswith("slot:")},
            cursors={k[4:]: v.decode() for k, v in fields.items() if k.startswith("cur:")},
        )

    async def channel_since(self, channel: str, after_id: str) -> list[tuple[str, bytes]]:
        raw: Any = await self._call(
            lambda: self._redis.xrange(
                channel_key(channel), f"({after_id}", "+", count=self.config.channel_history
            )
        )
        return [(bytes(entry_id).decode(), bytes(body[b"p"])) for entry_id, body in raw]

    async def seed(
        self, session_id: str, stored: StoredSession, entries: Sequence[tuple[int, bytes]]
    ) -> bool:
        pairs: list[Any] = [("channels", orjson.dumps(sorted(stored.channels)))]
        if stored.cookie:
            pairs.append(("cookie", stored.cookie))
        if stored.events_url:
            pairs.append(("events", stored.events_url))
        pairs += [(f"slot:{slot}", value) for slot, value in stored.slots.items()]
        args: list[Any] = [self.ttl_s, self.config.session_log, stored.seq, len(pairs)]
        for name, value in pairs:
            args += (name, value)
        for seq, message in entries:
            args += (seq, message)
        keys = [session_key(session_id), log_key(session_id)]
        done = await self._call(lambda: self._evalsha(self._redis, "seed", keys, args))
        return bool(int(done))

    async def touch(self, session_ids: Sequence[str]) -> None:
        async def run() -> None:
            pipe = self._redis.pipeline(transaction=False)
            for session_id in session_ids:
                pipe.expire(session_key(session_id), self.ttl_s)
                pipe.expire(log_key(session_id), self.ttl_s)
            await pipe.execute()

        if session_ids:
            await self._call(run)
