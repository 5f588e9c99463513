"""Whether an entry is stored, for how long, under which tags: one pure function.

A page and each of its fragments are stored by the same rules (RFC 9111 §3 through
:func:`weaver.cache.freshness.storable`); a woven page is stored only if its shell and
every blocking fragment may be, and none fell back. Its lifetime is the shortest of its
parts' (what is left of each fragment's), its tags the union of the route's, the shell's
and the fragments'. Nothing here reads a clock or does I/O: times are parameters.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from weaver.cache import freshness as fresh
from weaver.cache.freshness import Freshness
from weaver.config.schema import RouteConfig


class Why(enum.Enum):
    """Why an entry is not stored."""

    NO_KEY = "not cacheable"  # a private fill: no key to store it under
    NOT_SUCCESS = "not a success"  # a fragment's own entry: 2xx only
    UNSTORABLE = "unstorable"  # RFC 9111 §3 says no; the detail names the rule
    FALLBACK = "assembled with a fallback"
    FRAGMENT = "fragment"  # a blocking fragment failed or may not be stored


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why not, and the detail (the rule, or the fragment's src and what became of it)."""

    why: Why
    detail: str = ""

    def __str__(self) -> str:
        if self.why is Why.FRAGMENT:
            return f"fragment {self.detail}"
        return self.detail or self.why.value


@dataclass(frozen=True, slots=True)
class Rules:
    """What a route says about storing.

    Attributes:
        ttl_s: the lifetime of a response without explicit freshness (else not stored).
        tags: purge tags every entry of the route carries.
        store_set_cookie: store responses that set cookies (never the cookie itself).
        is_success_only: store only 2xx answers (a fragment's own entry).
    """

    ttl_s: float | None = None
    tags: tuple[str, ...] = ()
    store_set_cookie: bool = False
    is_success_only: bool = False

    @classmethod
    def page(cls, route: RouteConfig) -> Rules:
        return cls(route.ttl_s, tuple(route.tags), route.store_set_cookie)

    @classmethod
    def fragment(cls, route: RouteConfig) -> Rules:
        """A fragment's own entry: its headers' tags only, 2xx only."""
        return cls(route.ttl_s, (), route.store_set_cookie, is_success_only=True)


@dataclass(frozen=True, slots=True)
class Answer:
    """The origin's answer to one request, and when it was asked and answered."""

    status: int
    headers: Mapping[str, str]
    request_time: float
    response_time: float


@dataclass(frozen=True, slots=True)
class Part:
    """A blocking fragment of a woven page, as it ended.

    Attributes:
        ended: what became of it (an outcome's name), for the refusal.
        is_answered: it answered (itself or its alt); else it fell back.
        ttl_left_s: what was left of its freshness when it was fetched or read from the
            cache; None: its headers' lifetime counts.
    """

    src: str
    ended: str
    is_answered: bool
    status: int | None = None
    headers: Mapping[str, str] | None = None
    ttl_left_s: float | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """The verdict on one entry: stored unless ``refusal``; its freshness and tags.

    ``freshness`` is the shell's, shortened to its shortest fragment's; it is computed
    even when the entry is refused (a fragment reports what is left of its lifetime).
    """

    freshness: Freshness
    tags: tuple[str, ...] = ()
    fragments: tuple[str, ...] = ()  # srcs of the blocking fragments it was woven from
    refusal: Refusal | None = None

    @property
    def is_stored(self) -> bool:
        return self.refusal is None


def entry_policy(
    shell: Answer,
    fragments: Sequence[Part] = (),
    *,
    rules: Rules,
    request_headers: Mapping[str, str],
    key: str,
    has_fallback: bool = False,
) -> Policy:
    """Whether the entry of ``key`` is stored, with its freshness and tags.

    Args:
        shell: the page's (or the fragment's) own answer.
        fragments: the blocking fragments a woven page was assembled from, in order;
            suspense includes are not among them (each visitor fetches their own).
        rules: the route's (:meth:`Rules.page` or :meth:`Rules.fragment`).
        request_headers: the request Weaver sent (``no-store``, ``Authorization``).
        key: where it would be stored; "" for a private fill (never stored).
        has_fallback: some include of the page fell back (it is not stored).
    """
    freshness = fresh.freshness_from_response(
        request_time=shell.request_time,
        response_time=shell.response_time,
        response_headers=shell.headers,
        route_ttl_s=rules.ttl_s,
    )
    tags = list(rules.tags) + list(fresh.tags_from_headers(shell.headers))
    refusal = shell_refusal(shell, rules, request_headers, key)
    if refusal is None and has_fallback:
        refusal = Refusal(Why.FALLBACK)
    srcs: list[str] = []
    for part in fragments:
        problem = _part_problem(part, rules)
        if problem is not None:
            refusal = refusal or Refusal(Why.FRAGMENT, f"{part.src} {problem}")
            continue
        assert part.headers is not None  # answered and storable
        if part.ttl_left_s is not None:
            lifetime = freshness.initial_age_s + part.ttl_left_s
        else:
            lifetime = fresh.freshness_lifetime(part.headers, route_ttl_s=rules.ttl_s)
        if lifetime < freshness.lifetime_s:
            freshness = dataclasses.replace(freshness, lifetime_s=lifetime)
        tags.extend(fresh.tags_from_headers(part.headers))
        srcs.append(part.src)
    return Policy(freshness, tuple(dict.fromkeys(tags)), tuple(srcs), refusal)


def shell_refusal(
    shell: Answer, rules: Rules, request_headers: Mapping[str, str], key: str
) -> Refusal | None:
    """Why the shell's own answer may not be stored, or None: what :func:`entry_policy`
    decides before any fragment is known, without computing freshness or tags (a fill
    asks this when the head arrives, on every miss)."""
    if not key:
        return Refusal(Why.NO_KEY)
    if rules.is_success_only and not 200 <= shell.status < 300:
        return Refusal(Why.NOT_SUCCESS, f"status {shell.status}")
    reason = _storable(shell.status, shell.headers, request_headers, rules)
    return None if reason is None else Refusal(Why.UNSTORABLE, reason)


def _part_problem(part: Part, rules: Rules) -> str | None:
    if not part.is_answered or part.headers is None or part.status is None:
        return f"ended {part.ended}"
    # A fragment is fetched with the page's request, which the shell's check has seen.
    return _storable(part.status, part.headers, {}, rules)


def _storable(
    status: int,
    headers: Mapping[str, str],
    request_headers: Mapping[str, str],
    rules: Rules,
) -> str | None:
    return fresh.storable(
        method="GET",
        status=status,
        request_headers=request_headers,
        response_headers=headers,
        route_allows_private=False,
        route_ttl_s=rules.ttl_s,
        allow_set_cookie=rules.store_set_cookie,
    )
