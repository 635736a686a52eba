"""Logging: redaction of credentials, the connection id on each line, levels."""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
from collections.abc import Iterator

import pytest

from rmail import log

# (line as a client or header would give it, the secret part, what must stay readable)
SECRETS: list[tuple[str, str, str]] = [
    ("a1 LOGIN alice secret", "secret", "a1 LOGIN alice"),
    ("AUTH PLAIN AGFsaWNlAGh1bnRlcjI=", "AGFsaWNlAGh1bnRlcjI=", "AUTH PLAIN"),
    ("a2 AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=", "AGFsaWNlAGh1bnRlcjI=", "AUTHENTICATE"),
    ("Authorization: Basic YWxpY2U6aHVudGVyMg==", "YWxpY2U6aHVudGVyMg==", "Authorization:"),
    ("Authorization: Basic xyz", "xyz", "Authorization:"),
    ("password=hunter2 user=alice", "hunter2", "user=alice"),
    ('{"user": "alice", "password": "hunter2"}', "hunter2", '"user": "alice"'),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln", "eyJhbGciOiJIUzI1NiJ9", "Bearer"),
    (
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln",
        "eyJhbGciOiJIUzI1NiJ9",
        "Authorization",
    ),
    ("token=abc123def", "abc123def", "token="),
]


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """``log.setup`` to a StringIO; the ``rmail`` logger tree is put back afterwards."""
    saved = {}
    for name in ("rmail", "mail.log"):
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate)
    out = io.StringIO()
    log.setup("DEBUG", stream=out)
    yield out
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        for handler in handlers:
            logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.parametrize(("line", "secret", "kept"), SECRETS, ids=[s[2] for s in SECRETS])
def test_redact_masks_the_secret_and_keeps_the_rest(line: str, secret: str, kept: str) -> None:
    cleaned = log.redact(line)
    assert secret not in cleaned
    assert kept in cleaned
    assert "****" in cleaned


def test_redact_leaves_ordinary_lines_alone() -> None:
    for line in (
        "delivered to=alice@example.test folder=INBOX uid=3 size=120",
        "a1 SELECT INBOX",
        "MAIL FROM:<bob@example.test> SIZE=1000",
        "",
    ):
        assert log.redact(line) == line


def test_redact_masks_a_quoted_login_password_with_spaces() -> None:
    """RFC 9051 LOGIN takes astrings: a quoted password may contain spaces."""
    cleaned = log.redact('a1 LOGIN "alice" "correct horse battery"')
    assert "horse" not in cleaned
    assert "battery" not in cleaned


@pytest.mark.parametrize(("line", "secret", "kept"), SECRETS, ids=[s[2] for s in SECRETS])
def test_a_logged_secret_never_reaches_the_stream(
    stream: io.StringIO, line: str, secret: str, kept: str
) -> None:
    logger = logging.getLogger("rmail.test")
    logger.info("C: %s", line)  # as an argument
    logger.info("C: " + line.replace("%", "%%"))  # in the message itself
    logger.info("peer sent %r", line.encode())  # as bytes, the way transcripts show lines
    text = stream.getvalue()
    assert secret not in text
    assert text.count("\n") == 3
    assert kept.strip('"') in text


def test_a_secret_in_a_logged_exception_never_reaches_the_stream(stream: io.StringIO) -> None:
    logger = logging.getLogger("rmail.test")
    try:
        raise ValueError("cannot parse 'a1 LOGIN alice hunter2'")
    except ValueError:
        logger.exception("command failed")
    text = stream.getvalue()
    assert "command failed" in text
    assert "hunter2" not in text


def test_the_library_smtp_transcript_is_redacted_too(stream: io.StringIO) -> None:
    log.setup("TRACE", stream=stream)
    logging.getLogger("mail.log").debug("%r Data: %r", ("127.0.0.1", 5), b"AUTH PLAIN AGFs")
    text = stream.getvalue()
    assert "Data:" in text
    assert "AGFs" not in text


def test_each_line_carries_the_connection_id(stream: io.StringIO) -> None:
    logger = logging.getLogger("rmail.test")
    logger.info("outside any connection")

    async def serve_one(name: str) -> None:
        log.conn_id.set(name)
        await asyncio.sleep(0)
        logger.info("inside %s", name)

    async def two_connections() -> None:
        await asyncio.gather(serve_one("c1"), serve_one("c2"))

    contextvars.copy_context().run(asyncio.run, two_connections())
    lines = stream.getvalue().splitlines()
    assert "[-] outside any connection" in lines[0]
    assert any("[c1] inside c1" in line for line in lines)
    assert any("[c2] inside c2" in line for line in lines)
    assert log.conn_id.get() == "-"


def test_levels_and_trace(stream: io.StringIO) -> None:
    logger = logging.getLogger("rmail.test")
    logger.log(log.TRACE, "trace hidden at DEBUG")
    logger.debug("debug shown")
    log.setup("TRACE", stream=stream)
    logger.log(log.TRACE, "trace shown")
    log.setup("WARNING", stream=stream)
    logger.info("info hidden")
    logger.warning("warning shown")
    text = stream.getvalue()
    assert "trace hidden" not in text
    assert "info hidden" not in text
    assert "debug shown" in text
    assert " TRACE rmail.test [-] trace shown" in text
    assert "warning shown" in text
    # setup replaces its handler instead of adding one: each line is written once.
    assert text.count("warning shown") == 1
    assert len(logging.getLogger("rmail").handlers) == 1
