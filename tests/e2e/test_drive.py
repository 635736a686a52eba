"""The drive and its share links against a running server, with curl and aiohttp."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import blake3
import pytest
from api_helpers import ApiServer, start_api_server

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")


@pytest.fixture(scope="module")
def drive_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {ALICE[0]: (ALICE[1], False), BOB[0]: (BOB[1], False)}
    with start_api_server(tmp_path_factory.mktemp("drive"), users) as server:
        server.store.accounts.set_user(BOB[0], quota_mb=1)
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def _basic(who: tuple[str, str] | None) -> dict[str, str]:
    if who is None:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode()}


async def _req(
    http: aiohttp.ClientSession,
    server: ApiServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    who: tuple[str, str] | None = ALICE,
    headers: Mapping[str, str] | None = None,
    url: str | None = None,
) -> tuple[int, Mapping[str, str], Any]:
    sent = {**_basic(who), **(headers or {})}
    kwargs: dict[str, Any] = {"headers": sent, "allow_redirects": False}
    if isinstance(body, (bytes, str)) or hasattr(body, "__aiter__"):
        kwargs["data"] = body  # an async iterator: sent chunked
    elif body is not None:
        kwargs["json"] = body
    async with http.request(method, url or server.base + path, **kwargs) as response:
        raw = await response.read()
        data: Any = json.loads(raw) if response.content_type == "application/json" else raw
        return response.status, response.headers.copy(), data


def _curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed (Debian package curl)"
    return subprocess.run([curl, "-sS", *args], capture_output=True, timeout=60, check=False)


def test_curl_upload_list_download_and_delete(drive_server: ApiServer, tmp_path: Path) -> None:
    source = tmp_path / "photo.jpg"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    auth = f"{ALICE[0]}:{ALICE[1]}"
    base = drive_server.base
    put = _curl("-u", auth, "-T", str(source), f"{base}/drive/curl/photo.jpg", "-w", "%{http_code}")
    assert put.stdout.endswith(b"201")
    listing = json.loads(_curl("-u", auth, f"{base}/drive/curl/").stdout)
    (child,) = listing["children"]
    assert child["name"] == "photo.jpg" and child["size"] == source.stat().st_size
    assert child["content_type"] == "image/jpeg"
    back = tmp_path / "back.jpg"
    _curl("-u", auth, "-o", str(back), f"{base}/drive/curl/photo.jpg")
    assert back.read_bytes() == source.read_bytes()
    ranged = _curl(
        "-u", auth, "-r", "100-199", f"{base}/drive/curl/photo.jpg", "-w", "%{http_code}"
    )
    assert ranged.stdout[:-3] == source.read_bytes()[100:200] and ranged.stdout.endswith(b"206")
    folder = tmp_path / "album"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    part = folder / "a.txt"
    form = _curl(
        "-u", auth,
        "-F", f"f=@{part};filename=album/a.txt",
        "-F", f"g=@{part};filename=album/deep/b.txt",
        f"{base}/drive/curl",
    )  # fmt: skip
    stored = json.loads(form.stdout)["stored"]
    assert [s["path"] for s in stored] == ["/curl/album/a.txt", "/curl/album/deep/b.txt"]
    gone = _curl("-u", auth, "-X", "DELETE", f"{base}/drive/curl", "-w", "%{http_code}")
    assert gone.stdout.endswith(b"204")
    assert _curl("-u", auth, f"{base}/drive/curl/", "-w", "%{http_code}").stdout.endswith(b"404")


async def test_etags_conditions_and_move(
    http: aiohttp.ClientSession, drive_server: ApiServer
) -> None:
    s = drive_server
    status, headers, entry = await _req(http, s, "PUT", "/drive/e/file.txt", b"one")
    assert status == 201 and headers["ETag"] == entry["etag"]
    etag = entry["etag"]
    status, headers, body = await _req(http, s, "GET", "/drive/e/file.txt")
    assert body == b"one" and headers["ETag"] == etag
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert (await _req(http, s, "GET", "/drive/e/file.txt", headers={"If-None-Match": etag}))[
        0
    ] == 304
    assert (await _req(http, s, "PUT", "/drive/e/file.txt", b"x", headers={"If-None-Match": "*"}))[
        0
    ] == 412
    assert (await _req(http, s, "PUT", "/drive/e/file.txt", b"two", headers={"If-Match": '"old"'}))[
        0
    ] == 412
    status, _, entry = await _req(
        http, s, "PUT", "/drive/e/file.txt", b"two", headers={"If-Match": etag}
    )
    assert status == 200 and entry["etag"] != etag
    await _req(http, s, "PUT", "/drive/e/other.txt", b"other")
    move = {"Destination": "/drive/e/other.txt", "Overwrite": "F"}
    assert (await _req(http, s, "MOVE", "/drive/e/file.txt", headers=move))[0] == 412
    move["Overwrite"] = "T"
    assert (await _req(http, s, "MOVE", "/drive/e/file.txt", headers=move))[0] == 204
    assert (await _req(http, s, "GET", "/drive/e/other.txt"))[2] == b"two"
    assert (await _req(http, s, "MKCOL", "/drive/e/sub"))[0] == 201
    assert (await _req(http, s, "MKCOL", "/drive/e/sub"))[0] == 405
    assert (await _req(http, s, "MKCOL", "/drive/nope/sub"))[0] == 409
    status, _, found = await _req(
        http, s, "PROPFIND", "/drive/e", headers={"Depth": "1", "Accept": "application/json"}
    )
    assert status == 207 and {c["name"] for c in found["children"]} == {"other.txt", "sub"}
    assert found["totals"] == {"files": 1, "dirs": 1, "bytes": 3}


@pytest.mark.parametrize(
    "path",
    ["/drive/..%2F..%2Fetc%2Fpasswd", "/drive/a/%2E%2E/%2E%2E/x", "/drive/%252E%252E/x",
     "/drive/_index.json", "/drive/x/_meta.json", "/drive/a%00b", "/drive/up.tmp",
     "/drive/a%5Cb"],
)  # fmt: skip
async def test_traversal_and_reserved_names(
    http: aiohttp.ClientSession, drive_server: ApiServer, path: str
) -> None:
    status, _, _ = await _req(http, drive_server, "PUT", path, b"x")
    assert status in (400, 404), (path, status)
    assert not (drive_server.server.root / "domains").joinpath("passwd").exists()


async def test_symlinks_in_the_folder_are_not_followed_out(
    http: aiohttp.ClientSession, drive_server: ApiServer
) -> None:
    await _req(http, drive_server, "PUT", "/drive/links/real.txt", b"mine")
    user_dir = drive_server.store.accounts.user_dir(ALICE[0])
    (user_dir / "drive" / "files" / "links" / "evil").symlink_to("/etc")
    status, _, _ = await _req(http, drive_server, "GET", "/drive/links/evil/passwd")
    assert status == 404
    status, _, listing = await _req(http, drive_server, "GET", "/drive/links/")
    assert [c["name"] for c in listing["children"]] == ["real.txt"]


async def test_quota_is_enforced_with_413(
    http: aiohttp.ClientSession, drive_server: ApiServer
) -> None:
    status, _, body = await _req(
        http, drive_server, "PUT", "/drive/big.bin", b"x" * (2 * 1024 * 1024), who=BOB
    )
    assert status == 413 and "quota" in body["error"]
    status, _, listing = await _req(http, drive_server, "GET", "/drive/", who=BOB)
    assert listing["children"] == []


async def test_other_users_and_anonymous_cannot_reach_a_drive(
    http: aiohttp.ClientSession, drive_server: ApiServer
) -> None:
    await _req(http, drive_server, "PUT", "/drive/private/secret.txt", b"secret")
    status, _, _ = await _req(http, drive_server, "GET", "/drive/private/secret.txt", who=BOB)
    assert status == 404
    assert (await _req(http, drive_server, "GET", "/drive/private/secret.txt", who=None))[0] == 401
    assert (await _req(http, drive_server, "GET", "/drive/", who=(ALICE[0], "bad")))[0] == 401


# -- shares ----------------------------------------------------------------------------------


async def _share(http: aiohttp.ClientSession, server: ApiServer, path: str, perms: str,
                 **extra: Any) -> dict[str, Any]:  # fmt: skip
    status, _, share = await _req(http, server, "POST", "/drive/_share",
                                  {"path": path, "permissions": perms, **extra})  # fmt: skip
    assert status == 201, share
    return dict(share)


@pytest.mark.parametrize("perms", ["R", "RC", "RU", "RD", "RCUD"])
async def test_share_permission_matrix(
    http: aiohttp.ClientSession, drive_server: ApiServer, perms: str
) -> None:
    s = drive_server
    root = f"/drive/matrix-{perms}"
    await _req(http, s, "PUT", f"{root}/existing.txt", b"old")
    share = await _share(http, s, f"/matrix-{perms}", perms)
    url = share["url"]
    get = await _req(http, s, "GET", "", who=None, url=url + "/existing.txt")
    assert get[0] == 200 and get[2] == b"old"
    create = await _req(http, s, "PUT", "", b"new", who=None, url=url + "/created.txt")
    assert create[0] == (201 if "C" in perms else 403)
    update = await _req(http, s, "PUT", "", b"changed", who=None, url=url + "/existing.txt")
    assert update[0] == (200 if "U" in perms else 403)
    mkcol = await _req(http, s, "MKCOL", "", who=None, url=url + "/folder")
    assert mkcol[0] == (201 if "C" in perms else 403)
    delete = await _req(http, s, "DELETE", "", who=None, url=url + "/existing.txt")
    assert delete[0] == (204 if "D" in perms else 403)
    root_delete = await _req(http, s, "DELETE", "", who=None, url=url)
    assert root_delete[0] == 403
    escape = await _req(http, s, "GET", "", who=None, url=url + "/..%2F..%2Fprivate%2Fsecret.txt")
    assert escape[0] in (400, 404)
    wrong_name = url.rsplit("/", 1)[0] + "/other-name/existing.txt"
    assert (await _req(http, s, "GET", "", who=None, url=wrong_name))[0] == 404


async def test_share_expiry_revocation_and_owner_only_management(
    http: aiohttp.ClientSession, drive_server: ApiServer
) -> None:
    s = drive_server
    await _req(http, s, "PUT", "/drive/page.html", b"<script>alert(1)</script>")
    share = await _share(http, s, "/page.html", "R")
    status, headers, _ = await _req(http, s, "GET", "", who=None, url=share["url"])
    assert status == 200 and headers["Content-Disposition"].startswith("attachment")
    assert "sandbox" in headers["Content-Security-Policy"]
    soon = await _share(http, s, "/page.html", "R", expires=time.time() + 2)
    assert (await _req(http, s, "GET", "", who=None, url=soon["url"]))[0] == 200
    expired = await _share(http, s, "/page.html", "R", expires=time.time() - 1)
    assert (await _req(http, s, "GET", "", who=None, url=expired["url"]))[0] == 404
    status, _, listed = await _req(http, s, "GET", "/drive/_share")
    assert {share["uid"], soon["uid"], expired["uid"]} <= {x["uid"] for x in listed["shares"]}
    uid = share["uid"]
    assert (await _req(http, s, "GET", f"/drive/_share/{uid}", who=BOB))[0] == 404
    assert (await _req(http, s, "DELETE", f"/drive/_share/{uid}", who=BOB))[0] == 404
    status, _, patched = await _req(http, s, "PATCH", f"/drive/_share/{uid}", {"permissions": "R"})
    assert status == 200 and patched["permissions"] == "R"
    assert (await _req(http, s, "PATCH", f"/drive/_share/{uid}", {"permissions": "RX"}))[0] == 400
    assert (await _req(http, s, "DELETE", f"/drive/_share/{uid}"))[0] == 204
    assert (await _req(http, s, "GET", "", who=None, url=share["url"]))[0] == 404
    fake = share["url"].replace(uid, "A" * 32)
    assert (await _req(http, s, "GET", "", who=None, url=fake))[0] == 404
    status, _, _ = await _req(
        http, s, "POST", "/drive/_share", {"path": "/page.html", "permissions": "RC"}
    )
    assert status == 400


async def test_concurrent_uploads_keep_totals_exact(
    http: aiohttp.ClientSession, drive_server: ApiServer
) -> None:
    s = drive_server

    async def upload(n: int) -> int:
        status, _, _ = await _req(http, s, "PUT", f"/drive/race/{n}.bin", b"r" * (n + 1))
        return status

    statuses = await asyncio.gather(*(upload(n) for n in range(30)))
    assert statuses == [201] * 30
    _, _, listing = await _req(http, s, "GET", "/drive/race/")
    assert listing["self"] == {"files": 30, "dirs": 0, "bytes": sum(range(1, 31))}
    assert listing["totals"] == listing["self"]


def _uploads_in_progress(server: ApiServer, who: tuple[str, str]) -> list[Path]:
    files = server.store.accounts.user_dir(who[0]) / "drive" / "files"
    return list(files.rglob("*.upload.tmp"))


async def test_a_streamed_upload_has_the_blake3_of_its_bytes_as_etag(
    http: aiohttp.ClientSession, drive_server: ApiServer, tmp_path: Path
) -> None:
    data = os.urandom(9 * 1024 * 1024 + 5)
    expected = '"' + blake3.blake3(data).hexdigest()[:40] + '"'

    async def body() -> AsyncIterator[bytes]:  # chunked: no Content-Length
        for at in range(0, len(data), 100_000):
            yield data[at : at + 100_000]

    status, headers, entry = await _req(http, drive_server, "PUT", "/drive/hash/a.bin", body())
    assert status == 201 and headers["ETag"] == expected and entry["etag"] == expected
    source = tmp_path / "b.bin"
    source.write_bytes(data)
    auth = f"{ALICE[0]}:{ALICE[1]}"
    put = _curl("-u", auth, "-T", str(source), f"{drive_server.base}/drive/hash/b.bin", "-i")
    assert f"ETag: {expected}".encode() in put.stdout
    status, headers, back = await _req(http, drive_server, "GET", "/drive/hash/b.bin")
    assert back == data and headers["ETag"] == expected


async def test_an_upload_over_quota_without_a_length_stops_with_413(
    http: aiohttp.ClientSession, drive_server: ApiServer
) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"q" * 100_000  # 4 MB against Bob's 1 MB

    status, _, answer = await _req(http, drive_server, "PUT", "/drive/over.bin", body(), who=BOB)
    assert status == 413 and "quota" in answer["error"]
    assert _uploads_in_progress(drive_server, BOB) == []
    _, _, listing = await _req(http, drive_server, "GET", "/drive/", who=BOB)
    assert listing["children"] == []


async def _raw_put(
    server: ApiServer, who: tuple[str, str], path: str, length: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that has sent the head of a PUT announcing ``length`` bytes, no body."""
    port = server.server.ports["http"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = _basic(who)["Authorization"]
    writer.write(
        f"PUT {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    return reader, writer


async def test_an_upload_cut_off_by_the_client_leaves_nothing_behind(
    http: aiohttp.ClientSession, drive_server: ApiServer
) -> None:
    _, writer = await _raw_put(drive_server, ALICE, "/drive/cut/partial.bin", 10 * 1024 * 1024)
    writer.write(b"p" * (2 * 1024 * 1024))
    await writer.drain()
    deadline = time.monotonic() + 10
    while not _uploads_in_progress(drive_server, ALICE):  # the writer thread has started
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    writer.close()
    await writer.wait_closed()
    while _uploads_in_progress(drive_server, ALICE):  # it notices and removes its file
        assert time.monotonic() < deadline, "the temporary file stayed"
        await asyncio.sleep(0.05)
    status, _, _ = await _req(http, drive_server, "GET", "/drive/cut/partial.bin")
    assert status == 404


async def test_an_upload_refused_while_the_client_still_sends_is_answered_at_once(
    drive_server: ApiServer,
) -> None:
    reader, writer = await _raw_put(drive_server, BOB, "/drive/stalled.bin", 4 * 1024 * 1024)
    writer.write(b"s" * 1000)  # then nothing more: the answer must not wait for the rest
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    assert status_line.startswith(b"HTTP/1.1 413")
    writer.close()
    await writer.wait_closed()
    assert _uploads_in_progress(drive_server, BOB) == []
