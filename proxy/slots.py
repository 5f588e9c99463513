"""Suspense slots and cut markers: deterministic bytes for the shared paint (pure).

A slot id depends only on the include's position in the document tree and its ``src``,
never on time, randomness or the visitor, so every visitor gets the same paint.
"""

from __future__ import annotations

import hashlib
import html

STREAM_PREFIX = "ws"  # a slot whose include asked to stream: ``ws`` + 12 hex digits


def slot_id(position: tuple[int, ...], src: str, *, is_stream: bool = False) -> str:
    """``w`` and 12 hex digits of BLAKE2b over the position (``0.3.1``) and ``src``;
    ``ws`` and 12 for an include that streams (so the slot list a stored page keeps says
    which slots stream without a field of its own: the id comes from the tag's bytes)."""
    text = ".".join(map(str, position)) + "\n" + src
    digest = hashlib.blake2b(text.encode(), digest_size=6).hexdigest()
    return (STREAM_PREFIX if is_stream else "w") + digest


def is_stream_slot(slot: str) -> bool:
    """Whether ``slot`` (from :func:`slot_id`) names an include that asked to stream."""
    return slot.startswith(STREAM_PREFIX) and len(slot) == len(STREAM_PREFIX) + 12


def placeholder(slot: str, fallback: bytes, src: str = "") -> bytes:
    """``<weaver-slot id="SLOT" data-src="SRC">fallback</weaver-slot>`` (DESIGN.md, Wire
    format, plus ``data-src`` so a page can name a slot by its fragment, e.g. as the
    target of an event whose answer patches it)."""
    attrs = b' id="' + slot.encode() + b'"'
    if src:
        attrs += b' data-src="' + html.escape(src).encode() + b'"'
    return b"<weaver-slot" + attrs + b">" + fallback + b"</weaver-slot>"


def cut_marker(src: str, reason: str) -> bytes:
    """An HTML comment marking where a fragment was cut, which ``src`` cannot close early."""
    safe = src.replace("--", "- -").replace(">", "&gt;")
    safe = safe.replace("--", "- -")  # "---" leaves one "--" after the first pass
    return f"<!-- weaver: fragment {safe} cut ({reason}) -->".encode()
