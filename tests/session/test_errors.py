"""The session's errors (session/errors.py): each carries the WebSocket close code and
the HTTP status DESIGN.md gives it, and a reason that fits a close frame."""

from __future__ import annotations

import aiohttp
import pytest

from tests.session.harness import client, closed_with, running_hub
from weaver.config.errors import WeaverError
from weaver.session.errors import (
    GOING_AWAY,
    INTERNAL,
    INVALID_PAYLOAD,
    MAX_REASON_BYTES,
    POLICY,
    TOO_BIG,
    TRY_AGAIN,
    SessionError,
    TokenError,
    TryAgain,
)


def test_the_close_codes_are_the_rfc_6455_codes_design_md_names() -> None:
    assert (GOING_AWAY, INVALID_PAYLOAD, POLICY, TOO_BIG, INTERNAL, TRY_AGAIN) == (
        1001,
        1007,
        1008,
        1009,
        1011,
        1013,
    )


@pytest.mark.parametrize(
    ("error", "close_code", "status"),
    [
        (SessionError(INVALID_PAYLOAD, "not JSON"), 1007, 400),
        (SessionError(TOO_BIG, "message of 70000 bytes over the limit 65536"), 1009, 400),
        (TokenError("session token expired"), 1008, 401),
        (TryAgain("too many connections on this node; retry"), 1013, 503),
    ],
)
def test_each_error_carries_its_close_code_and_http_status(
    error: SessionError, close_code: int, status: int
) -> None:
    assert (error.close_code, error.status) == (close_code, status)
    assert isinstance(error, WeaverError)  # the CLI and the HTTP layer catch these


def test_the_message_names_the_close_code_and_the_reason() -> None:
    error = TokenError("session token signature does not match")
    assert error.reason == "session token signature does not match"
    assert str(error) == "1008: session token signature does not match"


def test_a_long_reason_is_cut_to_fit_a_close_frame_never_mid_character() -> None:
    reason = "é" * 100  # 200 bytes in UTF-8: an odd cut would split a character
    error = SessionError(POLICY, reason)
    encoded = error.reason.encode("utf-8")
    assert len(encoded) <= MAX_REASON_BYTES == 123
    assert error.reason == "é" * 61  # 122 bytes: the 62nd would need 124
    assert str(error) == f"1008: {reason}"  # the log keeps it whole


def test_a_lone_surrogate_in_a_reason_becomes_a_question_mark() -> None:
    assert SessionError(POLICY, "bad \ud800 name").reason == "bad ? name"


def test_a_reason_of_exactly_the_limit_is_kept_whole() -> None:
    reason = "r" * MAX_REASON_BYTES
    assert SessionError(POLICY, reason).reason == reason


async def test_a_forged_token_closes_the_socket_with_1008_and_is_401_over_sse() -> None:
    async with running_hub() as running:
        async with client(running, "weaver_session=forged.token") as ws:
            code, reason = await closed_with(ws)
        async with (
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
            http.get(
                running.http_url + "/_weaver/events",
                headers={"Cookie": "weaver_session=forged.token"},
            ) as resp,
        ):
            status = resp.status
    assert code == 1008 and reason
    assert status == 401
