"""Every touch of the store, ``Manifest`` and ``Freshness`` by the weave and the fill.

Pages and fragments share ONE commit path: a blob writer begun when the response may be
stored (:func:`begin`), fed the bytes as they go out, then :func:`commit` once the whole
body (and so its hash) is known. What an entry says — status, kept headers, freshness,
tags, variant — is an :class:`EntryFacts`; a page's facts fold in its fragments'
(:func:`page_facts`: the shortest lifetime, the union of tags, no fragment fell back).

The functions that read or build ``Manifest``/``Freshness`` fields: :func:`lookup_fragment`
(``freshness_of``, ``Freshness.state``/``age``, ``is_soft_purged``, ``variant``,
``headers``), :func:`response_freshness`, :func:`page_facts` (``lifetime_s``,
``initial_age_s``), :func:`commit` (``new_manifest``, ``replace(key=…)``),
:func:`conditional_headers` (``headers``, ``fragments``) and :func:`refresh`
(``replace`` with the seven freshness fields, ``is_soft_purged``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from weaver.cache import freshness as fresh
from weaver.cache import manifest as manifests
from weaver.cache.freshness import CacheState, Freshness
from weaver.cache.keys import cache_key, normalise_url, parse_vary, request_vary_values
from weaver.cache.manifest import Manifest
from weaver.cache.store import BlobWriter, Entry, Store
from weaver.config.schema import RouteConfig
from weaver.proxy.errors import FragmentError
from weaver.proxy.weave_events import FragmentRecord, Outcome, WeaveRecord


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """What a committed entry says about its response (its body is the writer's)."""

    key: str
    status: int
    headers: tuple[tuple[str, str], ...]  # as received; filtered when committed
    freshness: Freshness
    tags: tuple[str, ...] = ()
    etag: str | None = None
    last_modified: str | None = None
    variant: str = ""
    slots: tuple[tuple[str, str, float], ...] = ()
    channels: tuple[str, ...] = ()
    fragments: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Cached:
    """A fresh stored fragment."""

    status: int
    headers: CIMultiDictProxy[str]
    ttl_left_s: float
    body: AsyncIterator[bytes]


def request_url(src: str, url: str) -> str:
    """``url`` in its normal form (RFC 3986 §6.2.2): what is fetched is what is keyed.

    Raises:
        FragmentError: ``url`` is not an http(s) URL with a valid host.
    """
    normal = normalise_url(url)
    if normal is None:
        raise FragmentError(src, "not a valid http(s) URL")
    authority, target = normal
    return f"{url.partition('://')[0].lower()}://{authority}{target}"


def fragment_key(url: str, sent: Mapping[str, str], vary: tuple[str, ...]) -> str:
    """A fragment's cache key: its URL and the route's vary headers as sent."""
    parts = urlsplit(url)
    values = request_vary_values(vary, (), sent)
    target = parts.path + ("?" + parts.query if parts.query else "")
    return cache_key("GET", parts.netloc, target, values, scheme=parts.scheme)


def variant_of(sent: Mapping[str, str], vary_header: str | None) -> str:
    """The values the origin's Vary names had in the request Weaver *sent* (RFC 9111
    §4.1), hashed: a stored entry serves only requests that agree on them, and a
    manifest on disk never holds a visitor's cookie or credentials in clear."""
    names = parse_vary(vary_header) or ()
    if not names:
        return ""
    lowered: dict[str, list[str]] = {}
    for name, value in sent.items():
        lowered.setdefault(name.lower(), []).append(" ".join(value.split()))
    text = "\n".join(f"{n}={','.join(lowered.get(n, []))}" for n in sorted(set(names)))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def variant_key(key: str, variant: str) -> str:
    """Where one variant of ``key`` is stored (RFC 9111 §4.1's secondary key)."""
    return f"{key}|variant={variant}"


def unstorable(
    route: RouteConfig, status: int, sent: Mapping[str, str], received: Mapping[str, str]
) -> str | None:
    """Why a response (a page's or a fragment's) must not be stored, or None."""
    return fresh.storable(
        method="GET",
        status=status,
        request_headers=sent,
        response_headers=received,
        route_allows_private=False,
        route_ttl_s=route.ttl_s,
        allow_set_cookie=route.store_set_cookie,
    )


def response_freshness(
    route: RouteConfig, received: Mapping[str, str], request_time: float, response_time: float
) -> Freshness:
    return fresh.freshness_from_response(
        request_time=request_time,
        response_time=response_time,
        response_headers=received,
        route_ttl_s=route.ttl_s,
    )


def tags_of(received: Mapping[str, str]) -> tuple[str, ...]:
    """The purge tags a response carries (its own; a page adds its route's)."""
    return fresh.tags_from_headers(received)


def ttl_left_s(freshness: Freshness) -> float:
    """Freshness left of a response just received."""
    return freshness.lifetime_s - freshness.initial_age_s


async def lookup_fragment(store: Store, key: str, sent: Mapping[str, str]) -> Cached | None:
    """The stored fragment under ``key`` if it is fresh and its variant is ``sent``'s."""
    entry = await store.get(key)
    if entry is None:
        return None
    manifest = entry.manifest
    if manifest.is_soft_purged:
        return None
    vary = CIMultiDict(manifest.headers).get("Vary")
    if vary and (parse_vary(vary) is None or variant_of(sent, vary) != manifest.variant):
        return None
    freshness = manifests.freshness_of(manifest)
    now = time.time()
    if freshness.state(now) is not CacheState.FRESH:
        return None
    headers = CIMultiDictProxy(CIMultiDict(manifest.headers))
    ttl = freshness.lifetime_s - freshness.age(now)
    return Cached(manifest.status, headers, ttl, entry.body())


def conditional_headers(stale: Manifest) -> dict[str, str]:
    """What revalidates ``stale`` (RFC 9111 §4.3.1); nothing for a woven page, whose
    validators are the shell's, not the page's."""
    if stale.fragments:
        return {}
    return fresh.conditional_headers(dict(stale.headers))


async def refresh(
    store: Store,
    key: str,
    stale: Manifest,
    route: RouteConfig,
    received: Mapping[str, str],
    request_time: float,
    response_time: float,
) -> Entry:
    """RFC 9111 §4.3.4: the origin said 304: store ``stale`` under ``key`` with the
    merged headers and a new freshness, and return the refreshed entry.

    Raises:
        RuntimeError: the entry vanished meanwhile.
    """
    merged = fresh.merge_304(list(stale.headers), received)
    freshness = response_freshness(route, CIMultiDict(merged), request_time, response_time)
    manifest = manifests.replace(
        stale,
        headers=tuple(fresh.filter_stored_headers(merged)),
        stored_at=freshness.stored_at,
        initial_age_s=freshness.initial_age_s,
        lifetime_s=freshness.lifetime_s,
        stale_while_revalidate_s=freshness.stale_while_revalidate_s,
        stale_if_error_s=freshness.stale_if_error_s,
        must_revalidate=freshness.must_revalidate,
        no_cache=freshness.no_cache,
        is_soft_purged=False,
    )
    await store.update_manifest(key, manifest)
    entry = await store.get(key)
    if entry is None:
        raise RuntimeError(f"{key} vanished while it was revalidated")
    return entry


async def begin(store: Store | None, key: str, reason: str | None) -> BlobWriter | None:
    """A writer for ``key`` if there is a store and nothing forbids storing (``reason``)."""
    if store is None or reason is not None or not key:
        return None
    return await store.begin(key)


def fragment_facts(
    key: str,
    route: RouteConfig,
    status: int,
    received: CIMultiDictProxy[str],
    sent: Mapping[str, str],
    freshness: Freshness,
) -> EntryFacts:
    del route  # a fragment's tags are its own (the route's go on the page)
    return EntryFacts(
        key=key,
        status=status,
        headers=tuple(received.items()),
        freshness=freshness,
        tags=tags_of(received),
        etag=received.get("ETag"),
        last_modified=received.get("Last-Modified"),
        variant=variant_of(sent, received.get("Vary")),
    )


def page_facts(
    facts: EntryFacts, route: RouteConfig, weave: WeaveRecord | None
) -> EntryFacts | str:
    """A woven page's facts folded with its fragments': the shortest lifetime, the union
    of tags; or why it must not be stored (a fallback, an unstorable fragment)."""
    tags = list(route.tags) + list(facts.tags)
    if weave is None:
        return dataclasses.replace(facts, tags=tuple(dict.fromkeys(tags)))
    if weave.has_fallback:
        return "assembled with a fallback"
    freshness = facts.freshness
    fragments: list[str] = []
    for record in weave.fragments:
        problem = _fragment_problem(record, route)
        if problem is not None:
            return f"fragment {record.src} {problem}"
        if record.headers is None:  # a suspense placeholder
            continue
        if record.ttl_left_s is not None:  # what is left of the fragment's lifetime
            lifetime = freshness.initial_age_s + record.ttl_left_s
        else:
            lifetime = fresh.freshness_lifetime(record.headers, route_ttl_s=route.ttl_s)
        freshness = dataclasses.replace(freshness, lifetime_s=min(freshness.lifetime_s, lifetime))
        tags.extend(fresh.tags_from_headers(record.headers))
        fragments.append(record.src)
    return dataclasses.replace(
        facts, freshness=freshness, tags=tuple(dict.fromkeys(tags)), fragments=tuple(fragments)
    )


def _fragment_problem(record: FragmentRecord, route: RouteConfig) -> str | None:
    if record.outcome is Outcome.SUSPENSE:
        return None
    if record.outcome not in (Outcome.OK, Outcome.ALT) or record.headers is None:
        return f"ended {record.outcome}"
    return unstorable(route, record.status or 0, {}, record.headers)


async def commit(
    store: Store, writer: BlobWriter, facts: EntryFacts, *, alias_variant: bool = False
) -> None:
    """Commit what ``writer`` holds under ``facts`` (a page's variant also under its own
    key, :func:`variant_key`: the handler looks pages up by variant, fragments by key)."""
    manifest = manifests.new_manifest(
        facts.key,
        facts.status,
        tuple(fresh.filter_stored_headers(facts.headers)),
        facts.freshness,
        tags=facts.tags,
        etag=facts.etag,
        last_modified=facts.last_modified,
        variant=facts.variant,
        slots=facts.slots,
        channels=facts.channels,
        fragments=facts.fragments,
    )
    stored = await writer.commit(manifest)
    if alias_variant and stored is not None and stored.variant:
        await store.alias(manifests.replace(stored, key=variant_key(stored.key, stored.variant)))
