"""The drive as a WebDAV server: the litmus suite, rclone, XML PROPFIND, and a file over 2 GB.

litmus and rclone are real clients (Debian packages ``litmus`` and ``rclone``, installed by
``.ci/run``); a test fails, never skips, when one is missing.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Final

import aiohttp
import blake3
import pytest
from api_helpers import ApiServer, start_api_server

ALICE: Final = ("alice@example.test", "alice-pw")
AUTH: Final = {"Authorization": "Basic " + base64.b64encode(":".join(ALICE).encode()).decode()}
D: Final = "{DAV:}"
LITMUS_GROUPS: Final = ("basic", "copymove", "props", "locks")


@pytest.fixture(scope="module")
def dav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    # fsync off: these tests are about the protocol, and a 2 GB upload must not wait for
    # the disk on a shared CI machine (the store's fsync path has its own tests).
    tmp = tmp_path_factory.mktemp("webdav")
    with start_api_server(tmp, {ALICE[0]: (ALICE[1], False)}, store={"fsync": False}) as server:
        server.store.accounts.set_user(ALICE[0], quota_mb=4096)  # room for the 2 GiB file
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


def _tool(name: str) -> str:
    found = shutil.which(name)
    assert found is not None, f"{name} is needed (Debian package {name}; .ci/run installs it)"
    return found


def test_litmus_basic_copymove_props_and_locks_pass(dav_server: ApiServer, tmp_path: Path) -> None:
    litmus = _tool("litmus")
    env = {**os.environ, "TESTS": " ".join(LITMUS_GROUPS)}
    url = f"{dav_server.base}/drive/"
    done = subprocess.run(
        [litmus, "-k", url, *ALICE],
        cwd=tmp_path,  # litmus writes debug.log to its working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = done.stdout + done.stderr
    summaries = dict(
        re.findall(r"<- summary for `(\w+)': of \d+ tests run: \d+ passed, (\d+) failed", out)
    )
    assert set(summaries) == set(LITMUS_GROUPS), out
    assert all(failed == "0" for failed in summaries.values()), out
    assert "skipped" not in out, out
    assert done.returncode == 0, out


def test_rclone_lists_copies_and_reads_back(dav_server: ApiServer, tmp_path: Path) -> None:
    rclone = _tool("rclone")
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "a.txt").write_bytes(b"alpha\n")
    (source / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    obscured = subprocess.run(
        [rclone, "obscure", ALICE[1]], capture_output=True, text=True, check=True
    ).stdout.strip()
    remote = [
        "--webdav-url",
        f"{dav_server.base}/drive/",
        "--webdav-vendor",
        "other",
        "--webdav-user",
        ALICE[0],
        "--webdav-pass",
        obscured,
        "--config",
        str(tmp_path / "rclone.conf"),
    ]

    def run(*args: str) -> str:
        done = subprocess.run(
            [rclone, *args, *remote], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("copy", str(source), ":webdav:rc")
    assert sorted(run("lsf", "-R", ":webdav:rc").split()) == ["a.txt", "sub/", "sub/b.bin"]
    back = tmp_path / "back"
    run("copy", ":webdav:rc", str(back))
    assert (back / "sub" / "b.bin").read_bytes() == (source / "sub" / "b.bin").read_bytes()
    run("check", str(source), ":webdav:rc")


async def test_propfind_answers_multistatus_xml_with_live_and_dead_properties(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    base = dav_server.base + "/drive/x"
    assert (await http.put(base + "/a.txt", data=b"hello")).status == 201
    patch = (
        b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:z="urn:z">'
        b"<D:set><D:prop><z:colour>blue</z:colour></D:prop></D:set></D:propertyupdate>"
    )
    async with http.request("PROPPATCH", base + "/a.txt", data=patch) as response:
        assert response.status == 207
    async with http.request("PROPFIND", base + "/", headers={"Depth": "1"}) as response:
        assert response.status == 207
        assert response.content_type == "application/xml"
        root = ET.fromstring(await response.read())
    hrefs = [node.text for node in root.iter(f"{D}href")]
    assert hrefs == ["/drive/x/", "/drive/x/a.txt"]
    file_response = root.findall(f"{D}response")[1]
    assert file_response.findtext(f".//{D}getcontentlength") == "5"
    assert file_response.findtext(f".//{D}getcontenttype") == "text/plain"
    assert file_response.findtext(".//{urn:z}colour") == "blue"
    async with http.request("PROPFIND", base + "/") as response:  # no Depth: infinity
        assert response.status == 403
        assert b"propfind-finite-depth" in await response.read()
    async with http.request("OPTIONS", base + "/") as response:
        assert response.headers["DAV"] == "1, 2" and "LOCK" in response.headers["Allow"]


async def test_unknown_extensions_are_sniffed_for_safe_types_only(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    base = dav_server.base + "/drive/sniff"
    png = b"\x89PNG\r\n\x1a\n" + bytes(32)
    assert (await http.put(base + "/picture.blob", data=png)).status == 201
    assert (await http.put(base + "/page.blob", data=b"<html><script>1</script>")).status == 201
    async with http.get(base + "/picture.blob") as response:
        assert response.content_type == "image/png"
    async with http.get(base + "/page.blob") as response:
        assert response.content_type == "application/octet-stream"


BIG: Final = 2 * 1024**3 + 7  # over 2 GiB: past any 32-bit size or offset
_BLOCK: Final = bytes(range(256)) * 4096  # 1 MiB


def _big_chunks() -> Iterator[bytes]:
    left = BIG
    while left:
        chunk = _BLOCK[: min(left, len(_BLOCK))]
        left -= len(chunk)
        yield chunk


async def test_a_file_over_2_gib_streams_up_and_back_with_ranges(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    digest = blake3.blake3()
    for chunk in _big_chunks():
        digest.update(chunk)
    etag = '"' + digest.hexdigest()[:40] + '"'

    async def body() -> AsyncIterator[bytes]:
        for chunk in _big_chunks():
            yield chunk

    url = dav_server.base + "/drive/big/huge.bin"
    headers = {"Content-Length": str(BIG)}
    async with http.put(url, data=body(), headers=headers, timeout=aiohttp.ClientTimeout(600)) as r:
        assert r.status == 201, await r.text()
        assert r.headers["ETag"] == etag
    async with http.head(url) as response:
        assert response.headers["Content-Length"] == str(BIG)
        assert response.headers["ETag"] == etag
    async with http.get(url, headers={"Range": f"bytes={BIG - 10}-"}) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes {BIG - 10}-{BIG - 1}/{BIG}"
        expected = b"".join(_big_chunks_tail(10))
        assert await response.read() == expected
    async with http.get(url, headers={"Range": "bytes=2147483640-2147483650"}) as response:
        assert response.status == 206
        data = await response.read()
        assert data == bytes((2147483640 + i) % 256 for i in range(11))
    # The drive's totals saw the whole size.
    async with http.get(dav_server.base + "/drive/big/") as response:
        assert (await response.json())["totals"]["bytes"] == BIG
    assert (await http.delete(url)).status == 204


def _big_chunks_tail(count: int) -> Iterator[bytes]:
    yield bytes((BIG - count + i) % 256 for i in range(count))


LOCKINFO: Final = (
    b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
    b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>me</D:owner></D:lockinfo>"
)


async def test_a_locked_file_needs_its_token_from_the_owner_and_is_read_only_to_a_share(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    base = dav_server.base + "/drive/locked"
    assert (await http.put(base + "/doc.txt", data=b"v1")).status == 201
    async with http.post(
        dav_server.base + "/drive/_share", json={"path": "/locked", "permissions": "RCUD"}
    ) as response:
        share_url = (await response.json())["url"]
    async with http.request(
        "LOCK", base + "/doc.txt", data=LOCKINFO, headers={"Timeout": "Second-60"}
    ) as response:
        assert response.status == 200
        token = response.headers["Lock-Token"].strip("<>")
        assert token.startswith("opaquelocktoken:")
        assert b"Second-" in await response.read()
    assert (await http.put(base + "/doc.txt", data=b"v2")).status == 423
    async with aiohttp.ClientSession() as visitor:
        assert (await visitor.put(share_url + "/doc.txt", data=b"v3")).status == 423
        assert (await visitor.delete(share_url + "/doc.txt")).status == 423
        assert (await visitor.get(share_url + "/doc.txt")).status == 200
    wrong = {"If": "(<opaquelocktoken:nope>)"}
    assert (await http.put(base + "/doc.txt", data=b"v2", headers=wrong)).status == 412
    good = {"If": f"(<{token}>)"}
    assert (await http.put(base + "/doc.txt", data=b"v2", headers=good)).status == 200
    unlock = {"Lock-Token": f"<{token}>"}
    assert (await http.request("UNLOCK", base + "/doc.txt", headers=unlock)).status == 204
    assert (await http.put(base + "/doc.txt", data=b"v4")).status == 200


async def test_dead_properties_follow_move_and_copy_depth_0_copies_the_folder_alone(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    base = dav_server.base + "/drive/mv"
    assert (await http.request("MKCOL", base + "/")).status == 201
    assert (await http.put(base + "/inner.txt", data=b"i")).status == 201
    patch = (
        b'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><t xmlns="urn:t" xml:lang="en">'
        b"<b>v</b></t></D:prop></D:set></D:propertyupdate>"
    )
    assert (await http.request("PROPPATCH", base + "/", data=patch)).status == 207
    moved = {"Destination": dav_server.base + "/drive/mv2/"}  # an absolute URL
    assert (await http.request("MOVE", base + "/", headers=moved)).status == 201
    shallow = {"Destination": "/drive/mv3/", "Depth": "0"}
    assert (
        await http.request("COPY", dav_server.base + "/drive/mv2/", headers=shallow)
    ).status == 201
    for folder, members in (("mv2", 1), ("mv3", 0)):
        async with http.request(
            "PROPFIND", f"{dav_server.base}/drive/{folder}/", headers={"Depth": "1"}
        ) as response:
            root = ET.fromstring(await response.read())
        assert len(root.findall(f"{D}response")) == 1 + members
        assert root.findtext(".//{urn:t}t/{urn:t}b") == "v"
    elsewhere = {"Destination": "http://other.example/drive/x"}
    assert (
        await http.request("COPY", dav_server.base + "/drive/mv2/", headers=elsewhere)
    ).status == 502
    nowhere = {"Destination": "/drive/no/such/place"}
    assert (
        await http.request("COPY", dav_server.base + "/drive/mv2/", headers=nowhere)
    ).status == 409


async def test_listings_change_as_soon_as_the_folder_does(
    http: aiohttp.ClientSession, dav_server: ApiServer
) -> None:
    base = dav_server.base + "/drive/poll/"
    assert (await http.put(base + "one.txt", data=b"1")).status == 201

    async def names() -> tuple[list[str], list[str]]:
        async with http.get(base) as response:
            listed = [c["name"] for c in (await response.json())["children"]]
        async with http.request("PROPFIND", base, headers={"Depth": "1"}) as response:
            root = ET.fromstring(await response.read())
        hrefs = [str(node.text) for node in root.iter(f"{D}href")][1:]
        return listed, hrefs

    assert await names() == (["one.txt"], ["/drive/poll/one.txt"])
    assert await names() == (["one.txt"], ["/drive/poll/one.txt"])  # from the cache
    assert (await http.put(base + "two.txt", data=b"2")).status == 201
    assert await names() == (["one.txt", "two.txt"], ["/drive/poll/one.txt", "/drive/poll/two.txt"])
    prop = (
        b'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><n xmlns="urn:n">1</n></D:prop>'
        b"</D:set></D:propertyupdate>"
    )
    assert (await http.request("PROPPATCH", base + "two.txt", data=prop)).status == 207
    async with http.request("PROPFIND", base, headers={"Depth": "1"}) as response:
        assert b"urn:n" in await response.read()
