"""Request bodies streamed to a writer thread: the event loop reads, a worker thread stores.

The loop keeps reading the body while the thread hashes and writes what came before: a
bounded queue of chunks between them (at most ``QUEUE_CHUNKS`` chunks, each a piece as
the socket delivered it, up to 1 MB under :func:`wide_reads`: 16 MB per upload at most,
never the whole body). Reading only when the thread asks for the next block, as the drive
did before, leaves the socket idle while the thread works (aiohttp stops reading a request
at 128 KB buffered), so the two never overlap.

Either side may stop: a writer that fails (quota, precondition) stops the reader at once
and its exception is raised; a reader that fails (the client went away) makes the writer's
chunk iterator raise, so the store removes its temporary file.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Final, TypeVar

from aiohttp import StreamReader

__all__ = ["QUEUE_CHUNKS", "READ_SIZE", "pump", "read_piece", "wide_reads"]

T = TypeVar("T")

# Enough for the reader to run ahead of the writer. Each chunk is one piece as the socket
# delivered it (read_piece: up to READ_SIZE under wide_reads, else 256 KB), so at most
# 16 MB per upload; more made no measurable difference with 1 MB reads.
QUEUE_CHUNKS: Final = 16
# Bytes a socket read may return while a request body streams in (see wide_reads).
READ_SIZE: Final = 1 << 20
_POLL: Final = 0.5  # seconds between the writer's checks that the reader is still there


async def read_piece(content: StreamReader) -> bytes:
    """The next piece of a request body as the socket delivered it (b"" at the end).

    Unlike ``readany``, which joins every buffered piece into one new bytes object (a copy
    of the body on the event loop), this hands each piece on as it is.
    """
    while True:
        data, end_of_http_chunk = await content.readchunk()
        if data or not end_of_http_chunk:
            return data


@contextlib.contextmanager
def wide_reads(transport: asyncio.BaseTransport | None) -> Iterator[None]:
    """Socket reads of up to ``READ_SIZE`` on ``transport`` for the time of the block.

    asyncio's plain socket transport reads at most 256 KB per ``recv`` (its ``max_size``,
    an attribute of the transport): a 512 MB upload made over 2,000 reads, each a trip
    through the parser, the body stream and the queue. With 1 MB reads curl uploads ran at
    810-930 MB/s instead of 640-770 (docs/performance.md). Transports without the attribute
    (TLS) are left as they are; the size is put back afterwards, so the small requests
    that follow on the connection do not each allocate a 1 MB buffer.
    """
    before = getattr(transport, "max_size", None)
    if not isinstance(before, int) or before >= READ_SIZE:
        yield
        return
    setattr(transport, "max_size", READ_SIZE)  # noqa: B010 (not in the transport's type)
    try:
        yield
    finally:
        setattr(transport, "max_size", before)  # noqa: B010


class BodyAbortedError(ConnectionError):
    """The request body stopped before its end (raised in the writer thread)."""


async def pump(read: Callable[[], Awaitable[bytes]], write: Callable[[Iterator[bytes]], T]) -> T:
    """Run ``write(chunks)`` in a worker thread, ``chunks`` being what ``read()`` returns
    until it returns ``b""``; returns what ``write`` returns, or raises what it raised.

    ``write`` must consume the chunks to their end unless it raises.
    """
    chunks: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
    aborted = threading.Event()
    finished = threading.Event()

    def iterate() -> Iterator[bytes]:
        while True:
            try:
                item = chunks.get(timeout=_POLL)
            except queue.Empty:
                if aborted.is_set():
                    raise BodyAbortedError("the request body was cut off") from None
                continue
            if item is None:
                return
            yield item

    def run() -> T:
        try:
            return write(iterate())
        finally:
            finished.set()
            while True:  # unblock a reader waiting for room
                try:
                    chunks.get_nowait()
                except queue.Empty:
                    break

    async def feed() -> None:
        while not finished.is_set():
            chunk = await read()
            item = chunk or None
            try:
                chunks.put_nowait(item)
            except queue.Full:
                # The writer is behind: wait for room in a thread, not on the loop.
                await asyncio.to_thread(_put_unless, chunks, item, finished)
            if item is None:
                return

    worker = asyncio.ensure_future(asyncio.to_thread(run))
    # When the reader fails first, nobody awaits the writer's BodyAbortedError.
    worker.add_done_callback(lambda done: done.cancelled() or done.exception())
    reader = asyncio.ensure_future(feed())
    try:
        await asyncio.wait((reader, worker), return_when=asyncio.FIRST_COMPLETED)
        if reader.done():
            reader.result()  # the client went away: raise that
        else:
            # The writer stopped first (it failed, e.g. over quota): answer now rather
            # than when the client sends more.
            reader.cancel()
    except BaseException:
        aborted.set()
        reader.cancel()
        raise
    return await worker


def _put_unless(
    chunks: queue.Queue[bytes | None], item: bytes | None, done: threading.Event
) -> None:
    while not done.is_set():
        try:
            chunks.put(item, timeout=_POLL)
            return
        except queue.Full:
            continue
