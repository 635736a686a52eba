"""Socket reads widened for an upload, on a real loopback connection."""

from __future__ import annotations

import asyncio

from rmail.web.drive.stream import READ_SIZE, wide_reads


async def test_wide_reads_widen_a_socket_transport_and_put_it_back() -> None:
    accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()

    async def on_client(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client = await asyncio.open_connection("127.0.0.1", port)
    writer = await accepted.get()
    transport = writer.transport
    before = getattr(transport, "max_size")  # noqa: B009
    assert before < READ_SIZE
    with wide_reads(transport):
        assert getattr(transport, "max_size") == READ_SIZE  # noqa: B009
    assert getattr(transport, "max_size") == before  # noqa: B009
    try:
        with wide_reads(transport):
            raise ValueError("the body failed")
    except ValueError:
        pass
    assert getattr(transport, "max_size") == before  # noqa: B009
    with wide_reads(None):  # no transport (the request is gone): nothing to do
        pass
    for w in (client, writer):
        w.close()
    server.close()
    await server.wait_closed()
