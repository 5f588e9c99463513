"""Every touch of the store, ``Manifest`` and ``Freshness`` by the weave and the fill.

Pages and fragments share ONE commit path: a blob writer begun when the response may be
stored (:func:`begin`), fed the bytes as they go out, then :func:`commit` once the whole
body (and so its hash) is known. What an entry says — status, kept headers, freshness,
tags, variant — is an :class:`EntryFacts`; a page's facts fold in its fragments'
(:func:`page_facts`: the shortest lifetime, the union of tags, no fragment fell back).

Whether an entry is stored, for how long and under which tags is the cache's one pure
function, :func:`weaver.cache.policy.entry_policy`, for pages (:func:`shell_refusal`,
:func:`page_facts`) and fragments (:func:`fragment_policy`) alike; ``Manifest`` embeds its
``Freshness``. Times come from the app's clock, as parameters.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from multidict import CIMultiDict, CIMultiDictProxy

from weaver.cache import freshness as fresh
from weaver.cache import manifest as manifests
from weaver.cache import policy as cache_policy
from weaver.cache.freshness import CacheState, Freshness
from weaver.cache.keys import cache_key, normalise_url, parse_vary, request_vary_values
from weaver.cache.manifest import Manifest
from weaver.cache.policy import Answer, Part, Policy, Refusal, Rules, entry_policy
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
    normal = _normal_url(url)
    if normal is None:
        raise FragmentError(src, "not a valid http(s) URL")
    return normal


@functools.lru_cache(maxsize=4096)
def _normal_url(url: str) -> str | None:
    """Once per distinct URL: a page's fragments are asked again on every miss."""
    normal = normalise_url(url)
    if normal is None:
        return None
    authority, target = normal
    return f"{url.partition('://')[0].lower()}://{authority}{target}"


def fragment_key(url: str, sent: Mapping[str, str], vary: tuple[str, ...]) -> str:
    """A fragment's cache key: its URL and the route's vary headers as sent."""
    if not vary:
        return _url_key(url)
    return _key(url, request_vary_values(vary, (), sent))


@functools.lru_cache(maxsize=4096)
def _url_key(url: str) -> str:
    """A route that varies on nothing keys a fragment by its URL alone: made once."""
    return _key(url, ())


def _key(url: str, values: tuple[tuple[str, str], ...]) -> str:
    parts = urlsplit(url)
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


def fragment_policy(
    route: RouteConfig, answer: Answer, sent: Mapping[str, str], key: str
) -> Policy:
    """The cache's verdict on a fragment's own entry (2xx only; its own tags)."""
    return entry_policy(answer, rules=Rules.fragment(route), request_headers=sent, key=key)


def fragment_refusal(
    route: RouteConfig, answer: Answer, sent: Mapping[str, str], key: str
) -> Refusal | None:
    """Why a fragment's own entry must not be stored, or None: :func:`fragment_policy`'s
    refusal, without its freshness and tags (asked when each fragment's head arrives)."""
    return cache_policy.shell_refusal(answer, Rules.fragment(route), sent, key)


def shell_refusal(
    route: RouteConfig, answer: Answer, sent: Mapping[str, str], key: str
) -> Refusal | None:
    """Why a page's response must not be stored (before its fragments are known), or None."""
    return cache_policy.shell_refusal(answer, Rules.page(route), sent, key)


def response_freshness(
    route: RouteConfig, received: Mapping[str, str], request_time: float, response_time: float
) -> Freshness:
    return fresh.freshness_from_response(
        request_time=request_time,
        response_time=response_time,
        response_headers=received,
        route_ttl_s=route.ttl_s,
    )


def ttl_left_s(freshness: Freshness) -> float:
    """Freshness left of a response just received."""
    return freshness.lifetime_s - freshness.initial_age_s


async def lookup_fragment(
    store: Store, key: str, sent: Mapping[str, str], now: float
) -> Cached | None:
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
    freshness = manifest.freshness
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
        freshness=freshness,
        is_soft_purged=False,
    )
    await store.update_manifest(key, manifest)
    entry = await store.get(key)
    if entry is None:
        raise RuntimeError(f"{key} vanished while it was revalidated")
    return entry


async def begin(store: Store | None, key: str, refusal: Refusal | None) -> BlobWriter | None:
    """A writer for ``key`` if there is a store and nothing forbids storing (``refusal``)."""
    if store is None or refusal is not None or not key:
        return None
    return await store.begin(key)


def fragment_facts(
    key: str,
    status: int,
    received: CIMultiDictProxy[str],
    sent: Mapping[str, str],
    policy: Policy,
) -> EntryFacts:
    """A fragment's own entry, as :func:`fragment_policy` allowed it."""
    return EntryFacts(
        key=key,
        status=status,
        headers=tuple(received.items()),
        freshness=policy.freshness,
        tags=policy.tags,
        etag=received.get("ETag"),
        last_modified=received.get("Last-Modified"),
        variant=variant_of(sent, received.get("Vary")),
    )


def page_facts(
    facts: EntryFacts,
    route: RouteConfig,
    weave: WeaveRecord | None,
    answer: Answer,
    sent: Mapping[str, str],
) -> EntryFacts | Refusal:
    """A page's facts with the cache's verdict on the whole (:func:`entry_policy`): the
    shortest lifetime of its parts, the union of tags; or why it must not be stored (a
    fallback, an unstorable fragment)."""
    parts = (
        ()
        if weave is None
        else tuple(_part(r) for r in weave.fragments if r.outcome is not Outcome.SUSPENSE)
    )
    policy = entry_policy(
        answer,
        parts,
        rules=Rules.page(route),
        request_headers=sent,
        key=facts.key,
        has_fallback=weave is not None and weave.has_fallback,
    )
    if policy.refusal is not None:
        return policy.refusal
    return dataclasses.replace(
        facts, freshness=policy.freshness, tags=policy.tags, fragments=policy.fragments
    )


def _part(record: FragmentRecord) -> Part:
    """A blocking fragment as the cache's policy sees it."""
    return Part(
        record.src,
        str(record.outcome),
        is_answered=record.outcome in (Outcome.OK, Outcome.ALT),
        status=record.status,
        headers=record.headers,
        ttl_left_s=record.ttl_left_s,
    )


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
