"""A bare HTTP file server: the least a Python server can do for the drive's transfers.

``bench/drive.py`` runs it beside rmail so its figures show what the client, the kernel
and the disk allow on this machine, apart from what rmail adds. It does the durable work
rmail does for an upload and nothing else: a PUT's body (``Content-Length`` only, with
``Expect: 100-continue`` answered) is received into one reused buffer, hashed with BLAKE3
(rmail's ETag), written to a temporary file that is fsynced, renamed into place and the
folder fsynced; a GET is one ``sendfile``; DELETE unlinks. No authentication (the
``Authorization`` header is ignored), no index, no quota, one thread per connection, and
each answer closes its connection.

    python bench/bare_http.py ROOT PORT [--no-fsync]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Final

import blake3

BUFFER: Final = 1 << 20
HEAD_MAX: Final = 64 * 1024


def serve(root: Path, port: int, fsync: bool) -> None:
    listener = socket.create_server(("127.0.0.1", port), reuse_port=False)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handle, args=(conn, root, fsync), daemon=True).start()


def handle(conn: socket.socket, root: Path, fsync: bool) -> None:
    with conn:
        head = b""
        while b"\r\n\r\n" not in head:
            data = conn.recv(65536)
            if not data or len(head) > HEAD_MAX:
                return
            head += data
        head, rest = head.split(b"\r\n\r\n", 1)
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines)}
        path = root / target.lstrip("/").replace("/", "_")
        if method == "PUT":
            if headers.get("expect", "").lower() == "100-continue":
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            put(conn, path, int(headers["content-length"]), rest, fsync)
            reply(conn, "201 Created")
        elif method == "GET" and path.is_file():
            with path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                reply(conn, "200 OK", size)
                conn.sendfile(f)
        elif method == "DELETE" and path.is_file():
            path.unlink()
            reply(conn, "204 No Content")
        else:
            reply(conn, "404 Not Found")


def put(conn: socket.socket, path: Path, length: int, first: bytes, fsync: bool) -> None:
    digest = blake3.blake3(first)
    tmp = path.with_name(path.name + ".tmp")
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    with tmp.open("wb", buffering=0) as out:
        out.write(first)
        left = length - len(first)
        while left > 0:
            got = conn.recv_into(buffer, min(BUFFER, left))
            if not got:
                raise ConnectionError("the body was cut off")
            digest.update(view[:got])
            out.write(view[:got])
            left -= got
        if fsync:
            os.fsync(out.fileno())
    os.replace(tmp, path)
    if fsync:
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    digest.hexdigest()


def reply(conn: socket.socket, status: str, length: int = 0) -> None:
    conn.sendall(
        f"HTTP/1.1 {status}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n".encode()
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    serve(args.root, args.port, not args.no_fsync)
    return 0


if __name__ == "__main__":
    sys.exit(main())
