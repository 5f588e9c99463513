"""What the Redis bus keeps: key names (one hash tag per session or channel) and the
channel notification's framing."""

from __future__ import annotations

import pytest

from weaver.session.bus import ChannelMessage
from weaver.session.redis_layout import channel_key, log_key, parse_channel_payload, session_key


def test_a_sessions_keys_share_one_hash_tag_and_a_channels_its_own() -> None:
    assert (session_key("a"), log_key("a")) == ("weaver:{s:a}", "weaver:{s:a}:log")
    assert channel_key("news") == "weaver:{c:news}:history"


def test_a_channel_notification_is_id_length_name_then_payload_unseparated() -> None:
    message = parse_channel_payload('7-0 5 né s{"x": 1}'.encode())  # "né s": 5 bytes
    assert message == ChannelMessage("né s", b'{"x": 1}', "7-0")


@pytest.mark.parametrize("data", [b"7-0 x news {}", b"7-0 99 news", b""])
def test_a_malformed_notification_is_none(data: bytes) -> None:
    assert parse_channel_payload(data) is None
