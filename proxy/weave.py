"""The weave as a sans-I/O state machine: events in, commands out (pure, no awaits).

One :class:`Weave` weaves one document: a page's shell, or a suspense stream's body. The
driver (:mod:`weaver.proxy.conductor`) feeds it facts — the shell's chunks and end, each
fragment's head, chunks, end or failure — and carries out the orders it answers with: emit
bytes into a sequencer part, fetch a fragment into a new part, leave a suspense
placeholder, set the response head, commit a fragment's entry, cut a fragment with its
fallback, end a part. Every rule of the weave lives here:

- the include policy (:func:`weaver.proxy.includes.plan_include`), nested includes to
  ``server.max_include_depth``, a ``src`` on its own ancestor chain cut as a loop;
- ``server.max_includes`` (includes seen) and ``server.max_fragment_requests`` (origin
  requests made, an ``alt`` included) as bounds whose excess is cut, never fetched;
- a failing fragment yields its ``alt`` (if it streamed nothing yet), else its fallback
  (nothing with ``onerror="continue"``) after a comment marking the cut; what it already
  streamed stays;
- the primary fragment (the first ``primary`` include of the shell found before the head
  could go) decides the page's status and ``Location``; a primary that fails makes it 502;
- the page's ``Link`` headers: the shell's, then those of every fragment answered so far.

Parts: the document is part :data:`ROOT`; fragment ``n`` (its record is
``record().fragments[n - 1]``) streams into part ``n``, a nested sequencer the driver pushes
into its parent part where the include stood. ``attempt`` tells a fragment's first fetch
(0) from its ``alt`` (1); events of a fetch the weave gave up on are refused.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from weaver.config.schema import Config, IncludeMode, OriginConfig, RouteConfig
from weaver.proxy.includes import plan_include
from weaver.proxy.scanner import Drop, Include, Scanner, Subscribe, Text
from weaver.proxy.slots import cut_marker, placeholder, slot_id
from weaver.proxy.weave_events import (
    ALT,
    FIRST,
    ROOT,
    Command,
    Commit,
    Cut,
    DeadlineReached,
    Emit,
    EmitBootstrap,
    EndPart,
    Event,
    Failure,
    FetchFragment,
    FragmentChunk,
    FragmentEnd,
    FragmentFailed,
    FragmentHead,
    FragmentMissed,
    FragmentRecord,
    Outcome,
    SetHead,
    ShellChunk,
    ShellEnd,
    ShellFailed,
    StartSuspense,
    StopFetch,
    SuspenseSlot,
    WeaveRecord,
)
from weaver.proxy.weave_parts import HeadState, Part, Parts, State, WeaveError

log = logging.getLogger(__name__)

_SCANNED_TYPES = ("text/html", "application/xhtml+xml")


@dataclass(slots=True)
class Weave:
    """The weave of one document.

    Args:
        base_url: the document's URL (includes resolve against it).
        chain: the URLs the document is already nested in (a stream's own URL).
        is_page: a page: it sets a response head and ends with the bootstrap script.
        shell_links: the shell's own ``Link`` values, first in the merged head.
    """

    config: Config
    route: RouteConfig
    origin: OriginConfig
    base_url: str
    chain: tuple[str, ...] = ()
    is_page: bool = True
    shell_links: tuple[str, ...] = ()
    requests_made: int = 0
    _scanner: Scanner = field(default_factory=Scanner)
    _parts: Parts = field(default_factory=Parts)
    _suspense: list[SuspenseSlot] = field(default_factory=list)
    _channels: list[str] = field(default_factory=list)
    _has_fallback: bool = False
    _dropped: Counter[Drop] = field(default_factory=Counter)
    _warned: set[Outcome] = field(default_factory=set)
    _head: HeadState = HeadState.UNSENT
    _primary: int | None = None  # the part of the primary fragment, until it decides
    _primary_head: tuple[int, str | None] | None = None
    _is_shell_ended: bool = False

    # queries

    @property
    def needs_bootstrap(self) -> bool:
        return bool(self._suspense or self._channels)

    @property
    def suspense(self) -> tuple[SuspenseSlot, ...]:
        """The suspense slots found so far, as in :meth:`record` (which costs more)."""
        return tuple(self._suspense)

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._channels)

    @property
    def is_head_sent(self) -> bool:
        return self._head is HeadState.SENT

    @property
    def has_fragments(self) -> bool:
        """Whether any include was found (cheap, unlike ``record().fragments``)."""
        return len(self._parts) > 0

    def take_ended(self) -> list[FragmentRecord]:
        """The includes that ended (or were cut) since the last call: the driver counts
        each as it ends, so the page's wrap-up does no work per include."""
        return self._parts.take_ended()

    @property
    def dropped(self) -> tuple[tuple[Drop, int], ...]:
        """ESI markup the scanners removed so far, as in :meth:`record`."""
        return tuple(self._dropped.items())

    def record(self) -> WeaveRecord:
        """What the weave did so far (fragments in document order of discovery)."""
        return WeaveRecord(
            fragments=tuple(p.frozen() for p in self._parts),
            suspense=tuple(self._suspense),
            channels=tuple(self._channels),
            has_fallback=self._has_fallback,
            dropped=self.dropped,
        )

    def links(self) -> tuple[str, ...]:
        """``Link`` values of the shell and of the fragments answered so far, once each."""
        links = dict.fromkeys(self.shell_links)
        for part in self._parts:
            if part.headers is not None:
                links.update(dict.fromkeys(part.headers.getall("Link", [])))
        return tuple(links)

    # the one entry point

    def handle(self, event: Event, now_s: float) -> list[Command]:
        """Apply ``event`` (seen at ``now_s``, the driver's monotonic clock).

        Raises:
            WeaveError: the event is not allowed in the weave's state (a driver bug).
        """
        out: list[Command] = []
        match event:
            case ShellChunk(data=data):
                self._check_shell_open()
                for found in self._scanner.feed(data):
                    self._on_found(found, ROOT, out, now_s)
                self._head_may_go(out)
            case ShellEnd():
                self._check_shell_open()
                for found in self._scanner.close():
                    self._on_found(found, ROOT, out, now_s)
                self._dropped.update(self._scanner.dropped)
                self._end_shell(out)
                if self.is_page:
                    out.append(EmitBootstrap(ROOT))
                out.append(EndPart(ROOT))
            case ShellFailed():
                self._check_shell_open()
                self._end_shell(out)
                out.append(EndPart(ROOT))
            case FragmentMissed(part=part, attempt=attempt):
                self._parts.live(part, attempt, State.ORDERED)
                self.requests_made += 1
                limit = self.config.server.max_fragment_requests
                if self.requests_made > limit:
                    why = f"more than server.max_fragment_requests = {limit}"
                    self._fail(part, Outcome.LIMIT, why, out, now_s)
            case FragmentHead(part=part, attempt=attempt):
                self._on_head(event, self._parts.live(part, attempt, State.ORDERED), out, now_s)
            case FragmentChunk(part=part, data=data, attempt=attempt):
                frag = self._parts.live(part, attempt, State.STREAMING)
                self._stream(frag, part, data, out, now_s)
            case FragmentEnd(part=part, attempt=attempt, ttl_left_s=ttl_left_s):
                frag = self._parts.live(part, attempt, State.STREAMING)
                if frag.scanner is not None:
                    for found in frag.scanner.close():
                        self._on_found(found, part, out, now_s, frag)
                    self._dropped.update(frag.scanner.dropped)
                    frag.scanner = None
                if ttl_left_s is not None:
                    frag.ttl_left_s = ttl_left_s
                if not frag.is_cached:
                    out.append(Commit(part, attempt))
                outcome = Outcome.OK if attempt == FIRST else Outcome.ALT
                self._parts.end(frag, outcome, duration_s=now_s - frag.started_s)
                out.append(EndPart(part))
            case FragmentFailed(part=part, failure=failure, attempt=attempt):
                self._parts.live(part, attempt, None)
                outcome = Outcome.TIMEOUT if failure is Failure.TIMEOUT else Outcome.ERROR
                self._fail(part, outcome, None, out, now_s)  # the driver logged why
            case DeadlineReached(part=part, attempt=attempt):
                self._parts.live(part, attempt, None)
                self._fail(part, Outcome.TIMEOUT, None, out, now_s)
            case _:
                raise WeaveError(f"not a weave event: {event!r}")
        return out

    # the shell

    def _check_shell_open(self) -> None:
        if self._is_shell_ended:
            raise WeaveError("the shell already ended")

    def _end_shell(self, out: list[Command]) -> None:
        self._is_shell_ended = True
        self._head_may_go(out)

    def _head_may_go(self, out: list[Command]) -> None:
        """After the shell's first chunk is scanned (or it ended): the head may go, once
        a primary found by then has decided."""
        if not self.is_page or self._head is not HeadState.UNSENT:
            return
        if self._primary is not None and self._primary_head is None:
            self._head = HeadState.WAITING_PRIMARY
            return
        self._send_head(out)

    def _send_head(self, out: list[Command]) -> None:
        self._head = HeadState.SENT
        status, location = self._primary_head or (None, None)
        out.append(SetHead(status, location, self.links(), self.record()))

    def _decide_primary(self, status: int, location: str | None, out: list[Command]) -> None:
        self._primary = None
        self._primary_head = (status, location)
        if self._head is HeadState.WAITING_PRIMARY:
            self._send_head(out)

    # what the scanners found

    def _on_found(
        self,
        found: Text | Include | Subscribe,
        part: int,
        out: list[Command],
        now_s: float,
        frag: Part | None = None,
    ) -> None:
        if isinstance(found, Text):
            if frag is not None:
                frag.streamed_bytes += len(found.data)
            out.append(Emit(part, found.data))
        elif isinstance(found, Subscribe):
            if found.channel not in self._channels:
                self._channels.append(found.channel)
        else:
            self._on_include(found, part, out, now_s, frag)

    def _on_include(
        self, include: Include, parent: int, out: list[Command], now_s: float, frag: Part | None
    ) -> None:
        base_url = frag.base_url if frag is not None else self.base_url
        path = frag.path if frag is not None else ()
        chain = frag.chain if frag is not None else self.chain
        plan = plan_include(
            include, base_url=base_url, route=self.route, origin=self.origin, config=self.config
        )
        position = (*path, include.index)
        depth = len(chain)
        server = self.config.server
        is_primary = (
            plan.is_primary and frag is None and self.is_page and self._head is HeadState.UNSENT
        )
        new = Part(
            plan=plan,
            path=position,
            chain=(*chain, plan.url),
            is_primary=is_primary and self._primary is None and self._primary_head is None,
            started_s=now_s,
        )
        part = self._parts.add(new)
        if len(self._parts) > server.max_includes:
            self._cut_include(new, parent, Outcome.LIMIT, "server.max_includes", out)
        elif plan.refused is not None:
            self._cut_include(new, parent, Outcome.REFUSED, plan.refused, out)
        elif plan.mode is IncludeMode.SUSPENSE:
            slot = slot_id(position, plan.src, is_stream=plan.is_stream)
            self._parts.end(new, Outcome.SUSPENSE, duration_s=0.0)
            self._suspense.append(SuspenseSlot(slot, plan))
            text = placeholder(slot, plan.fallback, plan.src)
            out.append(StartSuspense(parent, slot, plan, text))
        elif depth >= server.max_include_depth:
            why = f"server.max_include_depth = {depth} reached"
            self._cut_include(new, parent, Outcome.DEPTH, why, out)
        elif plan.url in chain:
            self._cut_include(new, parent, Outcome.LOOP, "it includes itself", out)
        else:
            if new.is_primary:
                self._primary = part
            out.append(FetchFragment(part, parent, plan.url, plan, is_urgent=new.is_primary))

    def _cut_include(
        self, frag: Part, parent: int, outcome: Outcome, why: str, out: list[Command]
    ) -> None:
        """An include never fetched: its marker and fallback stand in its place."""
        self._warn(frag.plan.src, outcome, why)
        self._has_fallback = True
        self._parts.end(frag, outcome, duration_s=0.0)
        text = cut_marker(frag.plan.src, outcome)
        if not frag.plan.continue_on_error:
            text += frag.plan.fallback
        out.append(Cut(parent, frag.plan.src, outcome, text))

    def _warn(self, src: str, outcome: Outcome, why: str) -> None:
        if outcome not in self._warned:  # once per page: a page of 10,000 is one line
            self._warned.add(outcome)
            log.warning("include %s not fetched (%s): %s", src, outcome, why)

    # fragments

    def _on_head(self, head: FragmentHead, frag: Part, out: list[Command], now_s: float) -> None:
        part = head.part
        frag.status, frag.headers, frag.base_url = head.status, head.headers, head.url
        frag.is_cached, frag.ttl_left_s = head.is_cached, head.ttl_left_s
        frag.move_to(State.STREAMING)
        location = head.headers.get("Location")
        if self._primary == part and head.attempt == FIRST:
            self._decide_primary(head.status, location, out)
            if head.status >= 500:
                self._fail(part, Outcome.ERROR, f"primary answered {head.status}", out, now_s)
                return
        elif not 200 <= head.status < 300:
            self._fail(part, Outcome.ERROR, f"answered {head.status}", out, now_s)
            return
        elif self._primary == part:  # the primary's alt answered
            self._decide_primary(head.status, location, out)
        content_type = head.headers.get("Content-Type", "").split(";", 1)[0]
        if content_type.strip().lower() in _SCANNED_TYPES:
            frag.scanner = Scanner()

    def _stream(self, frag: Part, part: int, data: bytes, out: list[Command], now_s: float) -> None:
        if frag.scanner is None:
            frag.streamed_bytes += len(data)
            out.append(Emit(part, data))
            return
        for found in frag.scanner.feed(data):
            self._on_found(found, part, out, now_s, frag)

    def _fail(
        self, part: int, outcome: Outcome, why: str | None, out: list[Command], now_s: float
    ) -> None:
        """The current fetch of ``part`` failed: its alt, else its cut. ``why`` is logged
        (None: the driver logged it, with the error it saw)."""
        frag = self._parts.get(part)
        out.append(StopFetch(part, frag.attempt))
        if frag.scanner is not None:
            self._dropped.update(frag.scanner.dropped)
            frag.scanner = None
        plan = frag.plan
        if why is None:
            pass
        elif outcome is Outcome.LIMIT:
            self._warn(plan.src, outcome, why)
        else:
            log.info("fragment %s failed: %s", plan.src, why)
        first_error = outcome is Outcome.ERROR and frag.attempt == FIRST
        if first_error and plan.alt_url and frag.streamed_bytes == 0:
            frag.move_to(State.ORDERED)
            frag.attempt = ALT
            out.append(FetchFragment(part, part, plan.alt_url, plan, attempt=ALT))
            return
        if frag.attempt == ALT:
            outcome = Outcome.ERROR  # the alt failed too: the src's own failure stands
        self._has_fallback = True
        text = cut_marker(plan.src, outcome)
        if not (frag.streamed_bytes or plan.continue_on_error):
            text += plan.fallback
        out.append(Cut(part, plan.src, outcome, text))
        if self._primary == part:
            self._decide_primary(502, None, out)
        self._parts.end(frag, outcome, duration_s=now_s - frag.started_s)
        out.append(EndPart(part))
