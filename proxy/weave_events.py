"""The weave's vocabulary: events (facts the driver saw), commands (orders the weave
gives), outcomes and the typed record of a weave (pure; see :mod:`weaver.proxy.weave`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from weaver.config.schema import IncludeMode
from weaver.proxy.includes import IncludePlan
from weaver.proxy.scanner import Drop

ROOT = 0
FIRST = 0  # the attempt of a fragment's own src
ALT = 1  # the attempt of its alt


class Outcome(enum.StrEnum):
    """What became of one include (Server-Timing, logs, metrics and the cache's rules)."""

    PENDING = "pending"
    OK = "ok"
    ALT = "alt"  # the include's alt answered instead
    TIMEOUT = "timeout"
    ERROR = "error"
    REFUSED = "refused"  # src not allowed or not a valid URL
    DEPTH = "depth"  # nested deeper than server.max_include_depth
    LOOP = "loop"  # the same src on its own ancestor chain
    LIMIT = "limit"  # past server.max_includes or server.max_fragment_requests
    SUSPENSE = "suspense"  # left as a placeholder for the session

    @property
    def is_fallback(self) -> bool:
        return self not in (Outcome.PENDING, Outcome.OK, Outcome.ALT, Outcome.SUSPENSE)


class Failure(enum.Enum):
    """Why a fragment fetch failed, as the driver saw it."""

    ERROR = "error"  # unreachable, broke off, an error status, not a valid URL
    TIMEOUT = "timeout"


# Events: facts the driver saw.


@dataclass(frozen=True, slots=True)
class ShellChunk:
    data: bytes


@dataclass(frozen=True, slots=True)
class ShellEnd:
    pass


@dataclass(frozen=True, slots=True)
class ShellFailed:
    """The document's own body broke off (the driver fails the response where it stands)."""


@dataclass(frozen=True, slots=True)
class FragmentMissed:
    """The fragment is not in the cache: the driver asks whether it may request it.

    The weave answers nothing when it may (it counts the request), or :class:`StopFetch`
    and a :class:`Cut` past ``server.max_fragment_requests``."""

    part: int
    attempt: int = FIRST


@dataclass(frozen=True, slots=True)
class FragmentHead:
    part: int
    status: int
    headers: CIMultiDictProxy[str]
    url: str  # what was fetched, in normal form (nested includes resolve against it)
    attempt: int = FIRST
    is_cached: bool = False
    ttl_left_s: float | None = None  # freshness left when read from the cache


@dataclass(frozen=True, slots=True)
class FragmentChunk:
    part: int
    data: bytes
    attempt: int = FIRST


@dataclass(frozen=True, slots=True)
class FragmentEnd:
    part: int
    attempt: int = FIRST
    ttl_left_s: float | None = None  # freshness of what was fetched, once it is whole


@dataclass(frozen=True, slots=True)
class FragmentFailed:
    part: int
    failure: Failure
    attempt: int = FIRST


@dataclass(frozen=True, slots=True)
class DeadlineReached:
    part: int
    attempt: int = FIRST


Event = (
    ShellChunk
    | ShellEnd
    | ShellFailed
    | FragmentMissed
    | FragmentHead
    | FragmentChunk
    | FragmentEnd
    | FragmentFailed
    | DeadlineReached
)


# Commands: orders for the driver.


@dataclass(frozen=True, slots=True)
class Emit:
    part: int
    data: bytes


@dataclass(frozen=True, slots=True)
class FetchFragment:
    """Fetch ``url`` into ``part``; a new part is pushed into ``parent`` first (not for an
    alt, which streams into its include's part). ``is_urgent``: it decides the head."""

    part: int
    parent: int
    url: str
    plan: IncludePlan
    attempt: int = FIRST
    is_urgent: bool = False


@dataclass(frozen=True, slots=True)
class StopFetch:
    """Give up the fetch ``(part, attempt)``: close its connection, feed nothing more."""

    part: int
    attempt: int


@dataclass(frozen=True, slots=True)
class StartSuspense:
    """Leave ``placeholder`` in ``part``; the session delivers ``slot``'s content."""

    part: int
    slot: str
    plan: IncludePlan
    placeholder: bytes


@dataclass(frozen=True, slots=True)
class Cut:
    """A fragment cut: ``text`` (the marker comment, then the fallback unless it streamed
    or continues on error) goes into ``part``."""

    part: int
    src: str
    outcome: Outcome
    text: bytes


@dataclass(frozen=True, slots=True)
class SetHead:
    """The response head may go: ``status`` None keeps the shell's own."""

    status: int | None
    location: str | None
    links: tuple[str, ...]
    record: WeaveRecord


@dataclass(frozen=True, slots=True)
class Commit:
    """The fragment fetched from the origin into ``part`` is whole: commit its cache
    entry, if the driver began one (never for a fragment read from the cache)."""

    part: int
    attempt: int


@dataclass(frozen=True, slots=True)
class EmitBootstrap:
    """Last in the document: the client runtime's script tag if, once the consumer gets
    there, the weave left suspense slots or channels (:attr:`Weave.needs_bootstrap`)."""

    part: int


@dataclass(frozen=True, slots=True)
class EndPart:
    part: int


Command = (
    Emit
    | FetchFragment
    | StopFetch
    | StartSuspense
    | Cut
    | SetHead
    | Commit
    | EmitBootstrap
    | EndPart
)


# The record of a weave.


@dataclass(frozen=True, slots=True)
class FragmentRecord:
    """What happened to one include: for Server-Timing, logs, metrics and the cache."""

    src: str
    mode: IncludeMode
    started_s: float
    duration_s: float | None = None
    outcome: Outcome = Outcome.PENDING
    status: int | None = None
    streamed_bytes: int = 0
    headers: CIMultiDictProxy[str] | None = None
    ttl_left_s: float | None = None  # freshness left when fetched or read from the cache
    is_cached: bool = False

    @property
    def is_done(self) -> bool:
        return self.outcome is not Outcome.PENDING


@dataclass(frozen=True, slots=True)
class SuspenseSlot:
    """A suspense include left as a placeholder; the session delivers its content."""

    slot: str
    plan: IncludePlan


@dataclass(frozen=True, slots=True)
class WeaveRecord:
    fragments: tuple[FragmentRecord, ...] = ()
    suspense: tuple[SuspenseSlot, ...] = ()
    channels: tuple[str, ...] = ()
    has_fallback: bool = False
    dropped: tuple[tuple[Drop, int], ...] = ()  # ESI markup the scanners removed
