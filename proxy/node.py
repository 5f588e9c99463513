"""One serving process: its listeners, its session hub, its app; reload and drain.

A :class:`Node` owns its listening sockets, so a reload that keeps ``server.listen``
builds the new app on the *same* socket (no connection is refused while the old app
drains), and keeps the session hub (and its sessions) unless ``[session]`` or ``[bus]``
changed. With several workers each is a Node whose sockets have ``SO_REUSEPORT``: the
kernel spreads connections over the workers (see :mod:`weaver.proxy.supervisor`).

Shutdown (:meth:`Node.stop`) is the drain: readiness turns 503, the listener stops
accepting, in-flight requests get ``server.drain_timeout``, then sessions get ``bye``
and close 1001 so their clients resume on another node.
"""

from __future__ import annotations

import logging
import socket
import ssl

from aiohttp import web

from weaver.config.schema import Config, HostPort
from weaver.proxy import access_log
from weaver.proxy.admin import READINESS_KEY
from weaver.proxy.app import build_app, hub_for, lane_front, page_front
from weaver.proxy.errors import ProxyError
from weaver.proxy.listener import EdgeRunner
from weaver.proxy.tls import server_context
from weaver.session.hub import SessionHub

log = logging.getLogger(__name__)


class ListenError(ProxyError):
    """A listener that cannot be opened; the message names the address and the key."""


def open_listener(address: HostPort, *, key: str, reuse_port: bool) -> socket.socket:
    """A listening TCP socket on ``address``.

    Raises:
        ListenError: the address is busy, not local, or not allowed; names ``key``.
    """
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        sock = socket.create_server(
            (address.host, address.port), family=family, backlog=1024, reuse_port=reuse_port
        )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ListenError(f"cannot listen on {address} ({key}): {reason}") from None
    sock.setblocking(False)
    return sock


class Node:
    """The listeners and the app of one process. Not thread-safe; one event loop."""

    def __init__(self, config: Config, *, reuse_port: bool = False) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.hub: SessionHub | None = None
        self._sock: socket.socket | None = None
        self._runner: web.AppRunner | None = None

    @property
    def http_port(self) -> int:
        assert self._sock is not None
        port: int = self._sock.getsockname()[1]
        return port

    @property
    def scheme(self) -> str:
        return "https" if self.config.server.is_tls else "http"

    async def start(self) -> None:
        """Open the listeners and serve ``config``.

        Raises:
            ListenError, TlsError: a listener cannot be opened; nothing is left open.
        """
        access_log.configure(self.config.server.access_log)
        http_ssl = self._contexts(self.config)[0]
        self._sock = open_listener(
            self.config.server.listen, key="server.listen", reuse_port=self.reuse_port
        )
        try:
            self.hub = await self._start_hub(self.config)
            self._runner = await self._serve(self.config, self._sock, http_ssl)
        except BaseException:
            await self.stop()
            raise

    async def reload(self, new: Config) -> None:
        """Serve ``new`` from now on; requests in flight finish on the old config.

        Raises:
            ListenError, TlsError: a new listener cannot be opened; the old config keeps
                serving, unchanged.
        """
        old = self.config
        http_ssl, _ = self._contexts(new)
        sock = self._sock
        if new.server.listen != old.server.listen or sock is None:
            sock = open_listener(new.server.listen, key="server.listen", reuse_port=self.reuse_port)
        if new.session != old.session or new.bus != old.bus:
            if self.hub is not None:
                await self.hub.stop()  # bye + 1001: clients reconnect to the new listener
            self.hub = None
            self.hub = await self._start_hub(new)
        access_log.configure(new.server.access_log)
        runner = await self._serve(new, sock, http_ssl)
        old_runner, old_sock = self._runner, self._sock
        self._runner, self._sock, self.config = runner, sock, new
        if old_runner is not None:
            await old_runner.cleanup()  # drains what the old app had in flight
        if old_sock is not None and old_sock is not sock:
            old_sock.close()
        log.info("reloaded %s", new.source)

    async def stop(self) -> None:
        """Drain: not ready, stop accepting, in-flight requests get ``drain_timeout``,
        then sessions get ``bye`` and 1001. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.app[READINESS_KEY].draining = True
            await runner.cleanup()
        hub, self.hub = self.hub, None
        if hub is not None:
            await hub.stop()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    @staticmethod
    def _contexts(config: Config) -> tuple[ssl.SSLContext | None, ssl.SSLContext | None]:
        server, session = config.server, config.session
        return (
            server_context(server.tls_cert, server.tls_key, where="server"),
            server_context(session.tls_cert, session.tls_key, where="session"),
        )

    async def _start_hub(self, config: Config) -> SessionHub | None:
        hub = hub_for(config)
        if hub is None:
            log.warning("session.secret is not set: no sessions; suspense keeps its fallbacks")
            return None
        session_ssl = self._contexts(config)[1]
        try:
            await hub.start(ssl=session_ssl, reuse_port=self.reuse_port)
        except OSError as exc:
            await hub.stop()
            raise ListenError(
                f"cannot listen on {config.session.listen} (session.listen): {exc.strerror or exc}"
            ) from None
        scheme = "wss" if session_ssl is not None else "ws"
        log.info("sessions on %s://%s:%d/", scheme, config.session.listen.host, hub.port)
        return hub

    async def _serve(
        self, config: Config, sock: socket.socket, context: ssl.SSLContext | None
    ) -> web.AppRunner:
        runner = EdgeRunner(
            build_app(config, hub=self.hub), config.server, front=lane_front, pages=page_front
        )
        await runner.setup()
        try:
            # A duplicate: the old app's server closes its own descriptor when it stops,
            # while this one (and the Node's) keep the socket listening.
            await web.SockSite(runner, sock.dup(), ssl_context=context).start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner
