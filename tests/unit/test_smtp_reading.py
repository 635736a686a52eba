"""``rmail.smtp.reading``: the DATA reader and the plain-path shortcut give aiosmtpd's results.

The reference for DATA is aiosmtpd 1.4.6's own loop (``SMTP.smtp_DATA``, from the
``readuntil`` to the dot-unstuffing), copied below as it is written there, run on a real
``asyncio.StreamReader`` fed the same bytes in the same chunks. The reference for paths is
aiosmtpd's ``SMTP._getaddr`` itself. Hypothesis looks for any stream or argument where
rmail's answer differs, including where the reader stops (the next command must be left
unread).
"""

from __future__ import annotations

import asyncio
import types

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rmail.smtp.reading import TOO_LONG, TOO_MUCH, plain_path, read_data

NEXT_COMMAND = b"NOOP\r\n"


async def _aiosmtpd_data(
    reader: asyncio.StreamReader, size_limit: int | None, line_limit: int
) -> bytes | str:
    """aiosmtpd 1.4.6 ``smtp_DATA``'s loop, its states as our reply texts."""
    data: list[bytearray] = []
    num_bytes = 0
    line_fragments: list[bytes] = []
    state = "NOMINAL"
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError as e:
            if state == "NOMINAL":
                state = TOO_LONG
            data *= 0
            line = await reader.read(e.consumed)
        if not line_fragments and line == b".\r\n":
            break
        num_bytes += len(line)
        if state == "NOMINAL" and size_limit and num_bytes > size_limit:
            state = TOO_MUCH
            data *= 0
        line_fragments.append(line)
        if line.endswith(b"\r\n"):
            if state == "NOMINAL":
                joined = b"".join(line_fragments)
                if len(joined) > line_limit:
                    state = TOO_LONG
                    data *= 0
                else:
                    data.append(bytearray(joined))
            line_fragments *= 0
    if state != "NOMINAL":
        return state
    for text in data:
        if text.startswith(b"."):
            del text[0]
    return b"".join(data)


async def _run(
    reader_fn: object, chunks: list[bytes], size_limit: int | None, line_limit: int
) -> tuple[bytes | str, bytes]:
    """Feed ``chunks`` into a reader one by one; returns the result and what was left."""
    reader = asyncio.StreamReader(limit=line_limit)

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.ensure_future(feed())
    assert callable(reader_fn)
    result = await reader_fn(reader, size_limit, line_limit)
    await feeder
    return result, await reader.read()


def _split(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


_PIECES = st.sampled_from([b"x", b"y" * 7, b".", b"..", b"\r", b"\n", b"\r\n", b".\r\n"])


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    body=st.lists(_PIECES, max_size=60).map(b"".join),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
    size_limit=st.one_of(st.none(), st.integers(min_value=0, max_value=120)),
    line_limit=st.integers(min_value=4, max_value=40),
)
def test_data_reader_matches_aiosmtpd(
    body: bytes, cuts: list[int], size_limit: int | None, line_limit: int
) -> None:
    stream = body + b"\r\n.\r\n" + NEXT_COMMAND
    chunks = _split(stream, cuts)
    expected = asyncio.run(_run(_aiosmtpd_data, chunks, size_limit, line_limit))
    assert asyncio.run(_run(read_data, chunks, size_limit, line_limit)) == expected


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b".\r\n", b""),  # the dot right after DATA: an empty message
        (b"a\r\n.\r\n", b"a\r\n"),
        (b"\r\n.\r\n", b"\r\n"),
        (b"Regards.\r\n.\r\n", b"Regards.\r\n"),  # a line ending in a dot, then the end
        (b"..\r\n.\r\n", b".\r\n"),  # a stuffed dot line
        (b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n"),
        (b"a\n.\r\nb\r\n.\r\n", b"a\n.\r\nb\r\n"),  # a bare LF does not end a line
        (b"a.\r\n.\r\n", b"a.\r\n"),
    ],
)
def test_data_reader_examples(stream: bytes, message: bytes) -> None:
    for chunks in ([stream + NEXT_COMMAND], [bytes([b]) for b in stream + NEXT_COMMAND]):
        assert asyncio.run(_run(read_data, chunks, None, 64)) == (message, NEXT_COMMAND)


def test_data_reader_limits() -> None:
    big = b"x" * 30 + b"\r\n"
    assert asyncio.run(_run(read_data, [big * 5 + b".\r\n"], 100, 64))[0] == TOO_MUCH
    long_line = b"y" * 70 + b"\r\n.\r\n"
    assert asyncio.run(_run(read_data, [long_line], None, 64))[0] == TOO_LONG
    # Too long and too big at once: aiosmtpd meets the long line first.
    assert asyncio.run(_run(read_data, [long_line], 20, 64))[0] == TOO_LONG


_ADDRESS_BITS = st.sampled_from(
    [*'ab.Z9-_+@<>[]()"\\ :;,=\t%!é', " SIZE=10", "@x.y", "<a@b.c>", "<a.b@c-d.e>"]
)
_ADDRESS_TEXT = st.lists(_ADDRESS_BITS, max_size=12).map("".join)


def _aiosmtpd_getaddr(arg: str) -> tuple[str | None, str | None]:
    fake = types.SimpleNamespace(local_part_limit=0)
    result: tuple[str | None, str | None] = SMTP._getaddr(fake, arg)  # type: ignore[arg-type]
    return result


@settings(max_examples=3000)
@given(_ADDRESS_TEXT)
def test_plain_path_matches_aiosmtpd(arg: str) -> None:
    arg = arg.strip()  # as aiosmtpd's _strip_command_keyword leaves it
    plain = plain_path(arg)
    if plain is not None:
        assert plain == _aiosmtpd_getaddr(arg)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("<alice@example.test>", ("alice@example.test", "")),
        ("<Alice.B+tag@Example.Test> SIZE=10240", ("Alice.B+tag@Example.Test", "SIZE=10240")),
        ("<a@b>  SIZE=1 BODY=8BITMIME", ("a@b", "SIZE=1 BODY=8BITMIME")),
        ("<>", None),
        ('<"a b"@c>', None),
        ("<@route:a@b>", None),
        ("<a@[127.0.0.1]>", None),
        ("<a@b> (comment)", None),
        ("<a@b>\tSIZE=1", None),
        ("a@b", None),
        ("<a..b@c>", None),
    ],
)
def test_plain_path_examples(arg: str, expected: tuple[str, str] | None) -> None:
    assert plain_path(arg) == expected
    if expected is not None:
        assert _aiosmtpd_getaddr(arg) == expected
