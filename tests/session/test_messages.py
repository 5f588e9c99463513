"""The wire format and tokens (pure): each bad input gets its close code and a reason."""

from __future__ import annotations

import json

import msgspec
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaver.session import auth
from weaver.session.errors import SessionError
from weaver.session.messages import (
    MAX_MESSAGE_BYTES,
    Ack,
    BadMessage,
    Bye,
    Cancel,
    ClientEvent,
    ClientHello,
    Hello,
    Message,
    Patch,
    Reset,
    ServerMessage,
    Slot,
    SlotAppend,
    SlotDone,
    SlotError,
    SlotProgress,
    SlotState,
    Subscribe,
    Unsubscribe,
    decode_client_message,
    encode,
    encoded,
    message_data,
    parse_client_message,
    slot_state_bytes,
    slot_state_from,
)
from weaver.session.resume import SessionLog


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"type":"hello","last_seq":3}', ClientHello(last_seq=3)),
        ('{"type":"hello","last_seq":0,"token":"t"}', ClientHello(last_seq=0, token="t")),
        (
            '{"type":"event","id":"e1","name":"add","target":"#b","data":{"p":1}}',
            ClientEvent(id="e1", name="add", target="#b", data={"p": 1}),
        ),
        ('{"type":"subscribe","channel":"deals"}', Subscribe(channel="deals")),
        ('{"type":"unsubscribe","channel":"deals"}', Unsubscribe(channel="deals")),
    ],
)
def test_valid_client_messages(raw: str, message: object) -> None:
    assert parse_client_message(raw) == message


@pytest.mark.parametrize(
    ("raw", "code", "reason"),
    [
        ("{not json", 1007, "not JSON"),
        (b"\xff\xfe", 1007, "not JSON"),
        ('{"type":"dance"}', 1008, "invalid message"),
        ("[1,2]", 1008, "invalid message"),
        ('{"type":"hello","last_seq":"x"}', 1008, "last_seq"),
        ('{"type":"hello","last_seq":-1}', 1008, "last_seq"),
        ('{"type":"event","name":"add"}', 1008, "id"),
        ('{"type":"event","id":"","name":"add"}', 1008, "event id"),
        ('{"type":"subscribe"}', 1008, "channel"),
        ('{"type":"subscribe","channel":"c","extra":1}', 1008, "extra"),
        (
            '{"type":"event","id":"e","name":"n","data":"' + "x" * MAX_MESSAGE_BYTES + '"}',
            1009,
            "over",
        ),
    ],
)
def test_bad_client_messages_get_a_close_code_and_reason(
    raw: str | bytes, code: int, reason: str
) -> None:
    with pytest.raises(SessionError) as caught:
        parse_client_message(raw)
    assert caught.value.close_code == code
    assert reason in caught.value.reason


def test_server_messages_carry_type_and_seq() -> None:
    assert encode(Slot("w1", "<b>x</b>"), 4) == (
        b'{"type":"slot","seq":4,"id":"w1","html":"<b>x</b>"}'
    )


def test_tokens_verify_and_refuse_forged_foreign_and_expired() -> None:
    token = auth.issue("secret", "sid", now=1000.0)
    assert auth.verify("secret", token, now=1001.0) == "sid"
    _session_id, issued, signature = token.split(".")
    forged = f"other.{issued}.{signature}"
    for bad, why in [
        (forged, "signature"),
        (token, "signature"),  # verified with another secret below: foreign
        ("garbage", "malformed"),
        (f"sid.{issued}.", "signature"),
    ]:
        with pytest.raises(SessionError, match=why) as caught:
            auth.verify("another" if bad == token else "secret", bad, now=1001.0)
        assert caught.value.close_code == 1008
    with pytest.raises(SessionError, match="expired"):
        auth.verify("secret", token, now=1000.0 + auth.MAX_AGE_S + 1)


def test_the_cookie() -> None:
    value = auth.cookie_header_value("tok")
    assert value.startswith("weaver_session=tok;")
    assert "HttpOnly" in value and "SameSite=Lax" in value and "Path=/" in value
    assert auth.token_from_cookie_header("a=1; weaver_session=tok; b=2") == "tok"
    assert auth.token_from_cookie_header("a=1") is None
    assert auth.token_from_cookie_header(None) is None


def test_the_log_resumes_exactly_or_says_it_cannot() -> None:
    log = SessionLog(max_messages=3, max_bytes=10_000)
    for _ in range(5):
        seq = log.next_seq()
        log.append(seq, b"m%d" % seq)
    assert log.since(5) == []
    assert log.since(3) == [(4, b"m4"), (5, b"m5")]
    assert log.since(2) == [(3, b"m3"), (4, b"m4"), (5, b"m5")]
    assert log.since(1) is None  # message 2 was dropped: reset, never a silent gap
    assert log.since(9) is None  # a seq from the future: reset


def test_the_log_is_bounded_in_bytes_too() -> None:
    log = SessionLog(max_messages=100, max_bytes=10)
    for _ in range(4):
        seq = log.next_seq()
        log.append(seq, b"12345")
    assert log.first_seq == 3


# Any client input: valid and invalid JSON, unknown types, wrong and extra fields, huge
# fields and integers, deep nesting, bytes that are not UTF-8, lone surrogates. The stdlib
# encoder writes what orjson refuses (integers past 64 bits, NaN), as a peer could.
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_huge = st.integers(min_value=0, max_value=3 * MAX_MESSAGE_BYTES).map(lambda n: "x" * n)
_field = _json | _huge | st.integers(min_value=-(2**80), max_value=2**80)
_message = st.fixed_dictionaries(
    {"type": st.sampled_from(["hello", "event", "subscribe", "unsubscribe"]) | st.text()},
    optional={
        key: _field
        for key in ("last_seq", "token", "id", "name", "target", "data", "channel", "extra")
    },
)
_deep = st.integers(min_value=1, max_value=20_000).map(
    lambda depth: '{"type":"event","id":"e","name":"n","data":' + "[" * depth + "]" * depth + "}"
)
_surrogates = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1)
_client_input: st.SearchStrategy[str | bytes] = st.one_of(
    _message.map(json.dumps),
    _message.map(lambda message: json.dumps(message).encode()),
    _json.map(json.dumps),
    _deep,
    st.binary(max_size=64),
    st.text(max_size=64),
    st.tuples(_message.map(json.dumps), _surrogates).map("".join),
    _surrogates.map(
        lambda text: json.dumps({"type": "subscribe", "channel": text}, ensure_ascii=False)
    ),
)


@given(st.lists(_client_input, max_size=8))
def test_any_client_input_is_a_message_or_a_refusal_with_a_close_code(
    sequence: list[str | bytes],
) -> None:
    for raw in sequence:
        try:
            message = parse_client_message(raw)
        except SessionError as error:
            assert error.close_code in (1007, 1008, 1009)
            assert error.reason
            assert len(error.reason.encode()) <= 123  # fits a close frame
        else:
            assert isinstance(message, ClientHello | ClientEvent | Subscribe | Unsubscribe)
            if isinstance(message, ClientEvent):
                orjson.dumps(message.data)  # it can be sent on to the origin


@pytest.mark.parametrize(
    ("raw", "code", "reason"),
    [
        ('{"type":"subscribe","channel":"\ud800"}', 1007, "not UTF-8"),
        (
            '{"type":"event","id":"e","name":"n","data":' + "[" * 5000 + "]" * 5000 + "}",
            1008,
            "nested",
        ),
        ('{"type":"event","id":"e","name":"n","data":' + "9" * 30 + "}", 1008, "64 bits"),
        ('{"type":"hello","last_seq":' + "9" * 30 + "}", 1008, "last_seq"),
        ('{"type":"subscribe","channel":"c","' + "é" * 100 + '":1}', 1008, "invalid message"),
    ],
    ids=["lone-surrogate", "deep-nesting", "huge-int-data", "huge-last-seq", "long-reason"],
)
def test_inputs_hypothesis_found_get_a_close_code_not_a_crash(
    raw: str, code: int, reason: str
) -> None:
    with pytest.raises(SessionError) as caught:
        parse_client_message(raw)
    assert caught.value.close_code == code and reason in caught.value.reason
    assert len(caught.value.reason.encode()) <= 123


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (Hello("s1", True), b'{"type":"hello","seq":7,"session":"s1","resumed":true}'),
        (Slot("w", "<b>é</b>"), '{"type":"slot","seq":7,"id":"w","html":"<b>é</b>"}'.encode()),
        (SlotError("w", "timeout"), b'{"type":"slot-error","seq":7,"id":"w","reason":"timeout"}'),
        (Patch("w", "x"), b'{"type":"patch","seq":7,"id":"w","html":"x"}'),
        (SlotAppend("w", 'a"\n'), b'{"type":"slot-append","seq":7,"id":"w","html":"a\\"\\n"}'),
        (
            SlotProgress("w", "fetch", 50.0, "half"),
            b'{"type":"slot-progress","seq":7,"id":"w","stage":"fetch","percent":50.0,'
            b'"message":"half"}',
        ),
        (SlotDone("w"), b'{"type":"slot-done","seq":7,"id":"w"}'),
        (
            Message("c", message_data({"a": [1, None]})),
            b'{"type":"message","seq":7,"channel":"c","data":{"a":[1,null]}}',
        ),
        (
            Message(None, msgspec.Raw(b'"raw"')),
            b'{"type":"message","seq":7,"channel":null,"data":"raw"}',
        ),
        (Ack("e1", False, None), b'{"type":"ack","seq":7,"event":"e1","ok":false,"error":null}'),
        (Reset(), b'{"type":"reset","seq":7}'),
        (Bye("server shutting down"), b'{"type":"bye","seq":7,"reason":"server shutting down"}'),
    ],
)
def test_each_server_message_is_encoded_once_with_its_seq_spliced_in(
    message: ServerMessage, wire: bytes
) -> None:
    head, tail = encoded(message)
    assert head + b"7" + tail == wire == encode(message, 7)
    parsed = orjson.loads(wire)
    assert parsed["seq"] == 7 and list(parsed)[:2] == ["type", "seq"]


@given(st.text(), st.text(), st.integers(min_value=0, max_value=2**53))
def test_server_messages_are_the_bytes_orjson_writes(slot: str, html: str, seq: int) -> None:
    assert encode(Slot(slot, html), seq) == orjson.dumps(
        {"type": "slot", "seq": seq, "id": slot, "html": html}
    )


@pytest.mark.parametrize(
    "message", [Slot("w", "<b>x</b>"), SlotError("w", "error"), Patch("w", "")]
)
def test_a_slot_state_kept_in_a_shared_log_reads_back_as_the_same_message(
    message: SlotState,
) -> None:
    state = slot_state_bytes(message)
    assert orjson.loads(state)[0] == orjson.loads(encode(message, 1))["type"]
    assert slot_state_from(state) == message


def test_decoding_never_raises_a_bad_message_is_a_value_with_its_code() -> None:
    bad = decode_client_message('{"type":"subscribe","channel":""}')
    assert bad == BadMessage(1008, "invalid message: channel must not be empty")
    assert isinstance(bad, BadMessage)
    error = bad.error()
    assert (error.close_code, error.reason, error.status) == (1008, bad.reason, 400)
    assert decode_client_message(b'{"type":"cancel","id":"w"}') == Cancel("w")
