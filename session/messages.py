"""The session wire format (pure): one type per message, client and server.

DESIGN.md "Wire format" is the contract. Client messages decode into their types; a bad
one decodes into :class:`BadMessage`, a value carrying the close code that says whose
fault it was: 1009 (too big), 1007 (not JSON), 1008 (JSON the protocol refuses).

Server messages are encoded once, before their ``seq`` is known (it is assigned where
the session's log lives, maybe another process): :func:`encoded` gives ``head`` and
``tail`` with ``head + str(seq) + tail`` the whole message. A channel message's data is
the publication's JSON as it arrived (:class:`msgspec.Raw`): one encoding for every
recipient, each session's seq spliced in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import orjson

from weaver.session.errors import INVALID_PAYLOAD, POLICY, TOO_BIG, SessionError

MAX_MESSAGE_BYTES = 64 * 1024
MAX_SEQ = 2**53 - 1  # JSON numbers past this lose precision in browsers


# client → server


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


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A client message the protocol refuses: the close code and reason it gets."""

    close_code: int
    reason: str

    def error(self) -> SessionError:
        return SessionError(self.close_code, self.reason)


def decode_client_message(data: str | bytes) -> ClientMessage | BadMessage:
    """One client message, or why it is refused (never raises)."""
    try:
        raw = data.encode() if isinstance(data, str) else data
    except UnicodeEncodeError:  # a lone surrogate: not text a peer could have sent
        return BadMessage(INVALID_PAYLOAD, "message is not JSON (not UTF-8)")
    if len(raw) > MAX_MESSAGE_BYTES:
        return BadMessage(TOO_BIG, f"message over {MAX_MESSAGE_BYTES} bytes")
    try:
        message: ClientMessage = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        return BadMessage(POLICY, f"invalid message: {exc}")
    except RecursionError:
        return BadMessage(POLICY, "invalid message: nested too deeply")
    except msgspec.DecodeError:
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError:
            return BadMessage(INVALID_PAYLOAD, "message is not JSON")
        return BadMessage(POLICY, "invalid message")
    return _refusal(message) or message


def _refusal(message: ClientMessage) -> BadMessage | None:
    if isinstance(message, ClientEvent):
        if not message.id:
            return BadMessage(POLICY, "invalid message: event id must not be empty")
        try:  # the event is forwarded to the origin as JSON: it must encode again
            orjson.dumps(message.data)
        except orjson.JSONEncodeError:
            return BadMessage(
                POLICY,
                "invalid message: event data cannot be sent on as JSON "
                "(an integer over 64 bits or nesting over 254)",
            )
    elif isinstance(message, Subscribe | Unsubscribe) and not message.channel:
        return BadMessage(POLICY, "invalid message: channel must not be empty")
    elif isinstance(message, Cancel) and not message.id:
        return BadMessage(POLICY, "invalid message: slot id must not be empty")
    return None


def parse_client_message(data: str | bytes) -> ClientMessage:
    """One client message, for a shell that closes on the error.

    Raises:
        SessionError: as :func:`decode_client_message` refuses it.
    """
    message = decode_client_message(data)
    if isinstance(message, BadMessage):
        raise message.error()
    return message


# server → client (field order is the wire order: after "type" and "seq")


class _Server(msgspec.Struct, tag_field="type", frozen=True):
    pass


class Hello(_Server, tag="hello", frozen=True):
    """Not logged: its seq is the last the session assigned (DESIGN.md)."""

    session: str
    resumed: bool


class Slot(_Server, tag="slot", frozen=True):
    id: str
    html: str


class SlotError(_Server, tag="slot-error", frozen=True):
    id: str
    reason: str


class Patch(_Server, tag="patch", frozen=True):
    id: str
    html: str


class SlotAppend(_Server, tag="slot-append", frozen=True):
    id: str
    html: str


class SlotProgress(_Server, tag="slot-progress", frozen=True):
    id: str
    stage: str
    percent: float | None
    message: str


class SlotDone(_Server, tag="slot-done", frozen=True):
    id: str


class Message(_Server, tag="message", frozen=True):
    """A channel message (``channel`` None: published to the one session). ``data`` is
    JSON already (a publication's payload as it arrived): spliced in, not re-encoded."""

    channel: str | None
    data: msgspec.Raw


class Ack(_Server, tag="ack", frozen=True):
    event: str
    ok: bool
    error: str | None


class Reset(_Server, tag="reset", frozen=True):
    pass


class Bye(_Server, tag="bye", frozen=True):
    reason: str


ServerMessage = (
    Hello
    | Slot
    | SlotError
    | Patch
    | SlotAppend
    | SlotProgress
    | SlotDone
    | Message
    | Ack
    | Reset
    | Bye
)
SlotState = Slot | SlotError | Patch  # what a session keeps per slot; a reset re-sends it

_encoder = msgspec.json.Encoder()


def encoded(message: ServerMessage) -> tuple[bytes, bytes]:
    """``message`` encoded once, before its seq: (head, tail) with
    ``head + b"%d" % seq + tail`` the message as the client gets it."""
    body = _encoder.encode(message)
    cut = body.find(b'"', 9) + 1  # after {"type":"TAG" (a tag has no quote or escape)
    return body[:cut] + b',"seq":', body[cut:]


def encode(message: ServerMessage, seq: int) -> bytes:
    """``message`` numbered ``seq``: ``{"type":…,"seq":n,…}``."""
    head, tail = encoded(message)
    return b"%s%d%s" % (head, seq, tail)


def message_data(data: Any) -> msgspec.Raw:
    """Publication data as :class:`Message` carries it (JSON once, as orjson writes it).

    Raises:
        orjson.JSONEncodeError: ``data`` is not JSON (an integer over 64 bits, …).
    """
    return msgspec.Raw(orjson.dumps(data))


_slot_state = msgspec.json.Decoder(SlotState)


def slot_state_bytes(message: SlotState) -> bytes:
    """How a shared log keeps a slot's state: ``["slot",{"id":…,"html":…}]``."""
    fields = msgspec.structs.asdict(message)
    return orjson.dumps([message.__struct_config__.tag, fields])


def slot_state_from(state: bytes) -> SlotState:
    """The slot state :func:`slot_state_bytes` wrote.

    Raises:
        msgspec.ValidationError, msgspec.DecodeError: not such a state.
    """
    tag, fields = orjson.loads(state)
    message: SlotState = _slot_state.decode(orjson.dumps({"type": tag, **fields}))
    return message
