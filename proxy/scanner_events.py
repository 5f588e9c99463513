"""What the include scanner returns: its events and its record of dropped markup.

:class:`Text`, :class:`Include` and :class:`Subscribe` are the events
:class:`~weaver.proxy.scanner.Scanner` emits; :class:`Drop` names one kind of ``esi:``
markup it removed and why (:class:`DropReason`), and :func:`format_drops` renders the
counts for one log line. Plain values: no parsing and no state here.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Text:
    """Bytes outside any tag, exactly as the origin sent them."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Include:
    """An include tag. ``index`` counts the includes of this document from 0."""

    syntax: str  # "esi" or "weaver"
    attrs: tuple[tuple[str, str], ...]
    fallback: bytes
    index: int
    raw: bytes

    def get(self, name: str, default: str | None = None) -> str | None:
        for key, value in self.attrs:
            if key == name:
                return value
        return default


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``<weaver-subscribe channel="c"/>``: the page's visitors are subscribed to ``c``."""

    channel: str


Event = Text | Include | Subscribe


class DropReason(enum.Enum):
    """Why markup in the ``esi:`` namespace was removed from the output."""

    NOT_IMPLEMENTED = "not implemented by Weaver"
    MALFORMED = "malformed"
    STRAY_END_TAG = "end tag without its start tag"
    NO_SRC = "include without src"
    UNCLOSED = "never closed"


@dataclass(frozen=True, slots=True)
class Drop:
    """One kind of dropped markup: ``name`` as in the tag, lowercased (``/esi:vars``)."""

    name: str
    reason: DropReason

    def __str__(self) -> str:
        return f"<{self.name}> ({self.reason.value})"


def format_drops(dropped: Mapping[Drop, int]) -> str:
    """One log line's worth: ``<esi:vars> (not implemented by Weaver) x2, …``."""
    return ", ".join(
        f"{drop} x{count}" if count > 1 else str(drop) for drop, count in dropped.items()
    )
