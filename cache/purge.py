"""Purge requests: parsed from the admin API's JSON and applied to a store.

A body names what to purge with any of:

- ``{"urls": [...]}``: every stored variant (all ``Vary`` values) of each URL. An absolute
  ``http(s)://host[:port]/path?query`` purges that host's entries only; a path
  (``/p/42?x=1``) purges it on every host, since keys hold the ``Host`` the visitors sent
  and an operator rarely knows every spelling they used. The URL is normalised as
  requests are (:func:`~weaver.cache.keys.normalise_target`): ``/p/%7e`` purges ``/p/~``,
  ``/p%2Fq`` does not purge ``/p/q``. The query is part of the URL: ``/p`` does not purge
  ``/p?x=1`` (a prefix does).
- ``{"prefix": "/shop"}``: every entry whose path is under ``/shop`` by path segments, as
  routes match (:func:`~weaver.config.schema.path_has_prefix`): ``/shop``, ``/shop/x``,
  ``/shop?q``, never ``/shopping``; on every host.
- ``{"tags": [...]}``: entries stored with those purge tags.
- ``{"keys": [...]}``: cache keys as logs show them.

``"soft": true`` marks the entries stale (revalidated on the next request) instead.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from weaver.cache.errors import BadPurge
from weaver.cache.keys import normalise_target, normalise_url, parse_key
from weaver.cache.store import Store
from weaver.config.schema import path_has_prefix

# Keys purged between two progress reports.
PURGE_BATCH = 500

Progress = Callable[[int, int], Awaitable[None]]

_FIELDS = ("urls", "prefix", "tags", "keys", "soft")


@dataclass(frozen=True, slots=True)
class UrlTarget:
    """A URL to purge: ``authority`` None means on every host."""

    authority: str | None
    target: str


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    keys: tuple[str, ...] = ()
    prefix: str | None = None
    tags: tuple[str, ...] = ()
    urls: tuple[UrlTarget, ...] = ()
    is_soft: bool = False


def _strings(body: dict[str, object], field: str) -> tuple[str, ...]:
    value = body.get(field, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BadPurge(f'"{field}" must be a list of non-empty strings')
    return tuple(value)


def parse_url(url: str) -> UrlTarget | None:
    """A URL to purge, normalised; None if it is neither an http(s) URL nor a path."""
    if url.startswith("/") and not url.startswith("//"):
        return UrlTarget(None, normalise_target(url.partition("#")[0]))
    found = normalise_url(url)
    return None if found is None else UrlTarget(*found)


def _urls(body: dict[str, object]) -> tuple[UrlTarget, ...]:
    urls = []
    for index, url in enumerate(_strings(body, "urls")):
        parsed = parse_url(url)
        if parsed is None:
            raise BadPurge(
                f'"urls"[{index}]: {url!r} is neither an http(s)://host[:port]/path URL '
                'nor a path starting with "/"'
            )
        urls.append(parsed)
    return tuple(urls)


def parse_purge_body(data: bytes) -> PurgeRequest:
    """Raises:
    BadPurge: not a JSON object, an unknown field, a field of the wrong type, or nothing
        to purge; the message names the field.
    """
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadPurge(f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadPurge('the body must be a JSON object: {"urls"|"prefix"|"tags"|"keys": …}')
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise BadPurge(f'unknown field "{unknown[0]}" (expected {", ".join(_FIELDS)})')
    prefix = body.get("prefix")
    if prefix is not None and (
        not isinstance(prefix, str) or not prefix.startswith("/") or "?" in prefix
    ):
        raise BadPurge('"prefix" must be a path starting with "/", without a query')
    soft = body.get("soft", False)
    if not isinstance(soft, bool):
        raise BadPurge('"soft" must be true or false')
    request = PurgeRequest(
        keys=_strings(body, "keys"),
        prefix=prefix,
        tags=_strings(body, "tags"),
        urls=_urls(body),
        is_soft=soft,
    )
    if not (request.keys or request.prefix or request.tags or request.urls):
        raise BadPurge('nothing to purge: give "urls", "prefix", "tags" or "keys"')
    return request


def matches(request: PurgeRequest, key: str) -> bool:
    """Whether ``key`` is named by the request's ``urls`` or ``prefix`` (pure)."""
    parts = parse_key(key)
    if request.prefix is not None and path_has_prefix(parts.path, normalise_target(request.prefix)):
        return True
    return any(
        url.target == parts.target and url.authority in (None, parts.authority)
        for url in request.urls
    )


async def apply_broadcast(store: Store, body: bytes) -> int:
    """Apply a purge another node received and broadcast (its admin request's body):
    every node drops the entries, memory tier included. A body this node cannot parse
    purges nothing here (the sending node answered 400 and broadcast nothing)."""
    try:
        request = parse_purge_body(body)
    except BadPurge:
        return 0
    return await apply(store, request)


async def apply(store: Store, request: PurgeRequest, *, progress: Progress | None = None) -> int:
    """Purge what ``request`` names; returns how many entries were purged.

    Keys are purged in batches of PURGE_BATCH; ``progress(done, total)`` is awaited after
    each, so an operator purging a large prefix sees it go.
    """
    count = 0
    if request.tags:
        count += await store.purge_tags(request.tags, soft=request.is_soft)
    wanted = set(request.keys)
    if request.prefix is not None or request.urls:
        wanted.update(k for k in await store.keys() if matches(request, k))
    keys = sorted(wanted)
    for start in range(0, len(keys), PURGE_BATCH):
        count += await store.purge_keys(keys[start : start + PURGE_BATCH], soft=request.is_soft)
        if progress is not None:
            await progress(min(start + PURGE_BATCH, len(keys)), len(keys))
    return count
