"""The session wire format (pure): client messages parsed and validated, server messages
encoded. DESIGN.md "Wire format" is the contract.

Parsing never raises anything but :class:`SessionError`, whose close code says whose
fault it was: 1009 (too big), 1007 (not JSON), 1008 (JSON the protocol refuses).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import orjson

from weaver.session.errors import INVALID_PAYLOAD, POLICY, TOO_BIG, SessionError

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SEQ = 2**53 - 1  # JSON numbers past this lose precision in browsers


class ClientHello(msgspec.Struct, tag="hello", tag_field="type", forbid_unknown_fields=True):
    last_seq: Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)] = 0
    token: str | None = None  # non-browser clients; browsers send the cookie
    # The session id the client's last server hello named (absent on a first connection
    # and from old clients). When the cookie now names another session (a second tab
    # rotated it), last_seq counts in a log that is not this session's: see server.py.
    session: str | None = None


class ClientEvent(msgspec.Struct, tag="event", tag_field="type", forbid_unknown_fields=True):
    id: str
    name: str
    target: str = ""
    data: Any = None


class Subscribe(msgspec.Struct, tag="subscribe", tag_field="type", forbid_unknown_fields=True):
    channel: str


class Unsubscribe(msgspec.Struct, tag="unsubscribe", tag_field="type", forbid_unknown_fields=True):
    channel: str


class Cancel(msgspec.Struct, tag="cancel", tag_field="type", forbid_unknown_fields=True):
    """Stop a slot's stream: its origin fetch is cancelled, the slot ends ``cancelled``."""

    id: str


ClientMessage = ClientHello | ClientEvent | Subscribe | Unsubscribe | Cancel
_decoder = msgspec.json.Decoder(ClientMessage)


def parse_client_message(data: str | bytes) -> ClientMessage:
    """One client message.

    Raises:
        SessionError: 1009 over MAX_MESSAGE_BYTES, 1007 not JSON, 1008 an unknown type
            or a bad field (the reason names it).
    """
    try:
        raw = data.encode() if isinstance(data, str) else data
    except UnicodeEncodeError:  # a lone surrogate: not text a peer could have sent
        raise SessionError(INVALID_PAYLOAD, "message is not JSON (not UTF-8)") from None
    if len(raw) > MAX_MESSAGE_BYTES:
        raise SessionError(TOO_BIG, f"message over {MAX_MESSAGE_BYTES} bytes")
    try:
        message: ClientMessage = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise SessionError(POLICY, f"invalid message: {exc}") from None
    except RecursionError:
        raise SessionError(POLICY, "invalid message: nested too deeply") from None
    except msgspec.DecodeError:
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise SessionError(INVALID_PAYLOAD, "message is not JSON") from None
        raise SessionError(POLICY, "invalid message") from None
    if isinstance(message, ClientEvent):
        if not message.id:
            raise SessionError(POLICY, "invalid message: event id must not be empty")
        try:  # the event is forwarded to the origin as JSON: it must encode again
            orjson.dumps(message.data)
        except orjson.JSONEncodeError:
            raise SessionError(
                POLICY,
                "invalid message: event data cannot be sent on as JSON "
                "(an integer over 64 bits or nesting over 254)",
            ) from None
    if isinstance(message, Subscribe | Unsubscribe) and not message.channel:
        raise SessionError(POLICY, "invalid message: channel must not be empty")
    if isinstance(message, Cancel) and not message.id:
        raise SessionError(POLICY, "invalid message: slot id must not be empty")
    return message


def encode(message_type: str, seq: int, **fields: Any) -> bytes:
    """A server message: ``{"type": …, "seq": n, …}`` as JSON bytes."""
    return orjson.dumps({"type": message_type, "seq": seq, **fields})


def encode_parts(message_type: str, **fields: Any) -> tuple[bytes, bytes]:
    """A server message before its seq is known: (head, tail) such that
    ``head + str(seq) + tail == encode(message_type, seq, **fields)``; the seq is
    assigned where the session's log lives (another process, with a shared bus)."""
    head = orjson.dumps({"type": message_type})[:-1] + b',"seq":'
    tail = b"," + orjson.dumps(fields)[1:] if fields else b"}"
    return head, tail
