"""The JSON API against a running server, with aiohttp's client (and curl for one flow).

Covers the original routes exactly (paths, fields, status codes, ``{"error": ...}``), the
additions (parsed messages, attachments, search, folders, flags, move/copy, send with
reply/forward/drafts), the security rules (pinned HS256, expiry, revocation, lockout,
admin-only routes, no cross-user access) and CORS.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from api_helpers import ApiClient, ApiServer, start_api_server

from rmail.store.keys import ensure_jwt_key

ALICE = ("alice@example.test", "alice-pw")
BOB = ("bob@example.test", "bob-pw")
ADMIN = ("root@example.test", "root-pw")

PLAIN = (
    b"From: Carol <carol@remote.test>\r\nTo: alice@example.test\r\n"
    b"Subject: =?utf-8?q?Caf=C3=A9?= plans\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <plans@remote.test>\r\n\r\nShall we meet at the caf\xc3\xa9?\r\n"
)


def _multipart() -> bytes:
    msg = email.message.EmailMessage()
    msg["From"] = "Dave <dave@remote.test>"
    msg["To"] = "alice@example.test"
    msg["Subject"] = "Report attached"
    msg["Message-ID"] = "<report@remote.test>"
    msg.set_content("Text version: see the report.")
    msg.add_alternative(
        '<p onclick="evil()">HTML <b>version</b><script>alert(1)</script>'
        '<img src="https://tracker.example/p.gif"></p>',
        subtype="html",
    )
    msg.add_attachment(b"%PDF-1.4 fake", maintype="application", subtype="pdf", filename="r.pdf")
    return msg.as_bytes(policy=email.policy.SMTP)


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {ALICE[0]: (ALICE[1], False), BOB[0]: (BOB[1], False), ADMIN[0]: (ADMIN[1], True)}
    with start_api_server(
        tmp_path_factory.mktemp("api"), users, auth={"max_failures": 1000}
    ) as server:
        inbox = server.store.mailbox(ALICE[0]).folder("INBOX")
        inbox.append(PLAIN)
        inbox.append(_multipart(), ["\\Seen"])
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def alice(api_server: ApiServer, session: aiohttp.ClientSession) -> ApiClient:
    client = ApiClient(session, api_server.base)
    await client.login("alice", ALICE[1], domain="example.test")
    return client


@pytest.fixture
async def bob(api_server: ApiServer, session: aiohttp.ClientSession) -> ApiClient:
    client = ApiClient(session, api_server.base)
    await client.login(*BOB)
    return client


@pytest.fixture
async def admin(api_server: ApiServer, session: aiohttp.ClientSession) -> ApiClient:
    client = ApiClient(session, api_server.base)
    await client.login(*ADMIN)
    return client


# -- login and tokens ------------------------------------------------------------------------


async def test_login_answers_token_username_domain_expires_in(
    api_server: ApiServer, session: aiohttp.ClientSession
) -> None:
    client = ApiClient(session, api_server.base)
    body = await client.login("alice@example.test", ALICE[1])
    assert body["username"] == "alice" and body["domain"] == "example.test"
    assert body["expires_in"] == 3600
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "HS256"


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"username": "alice", "password": "x"}, 400),  # no domain
        ({"username": "alice@example.test"}, 400),
        ({"username": 5, "password": "x"}, 400),
        ({"username": "alice@example.test", "password": "wrong"}, 401),
        ({"username": "nobody@example.test", "password": "x"}, 401),
        ({"username": "alice@example.test", "password": "x" * 1025}, 401),
    ],
)
async def test_bad_logins(
    api_server: ApiServer, session: aiohttp.ClientSession, body: dict[str, Any], status: int
) -> None:
    client = ApiClient(session, api_server.base)
    got, answer = await client.call("POST", "/auth/login", json=body)
    assert got == status and isinstance(answer["error"], str)


async def test_login_bodies_that_are_not_json_objects_are_400(
    api_server: ApiServer, session: aiohttp.ClientSession
) -> None:
    client = ApiClient(session, api_server.base)
    for data in (b"not json", b"[1, 2]", b"\xff\xfe"):
        status, body = await client.call("POST", "/auth/login", data=data)
        assert status == 400 and "error" in body


async def test_tokens_are_checked(api_server: ApiServer, alice: ApiClient) -> None:
    assert (await alice.call("GET", "/folders", token=""))[0] == 401
    status, body = await alice.call("GET", "/folders", token="garbage")
    assert status == 401 and body == {"error": "invalid token"}
    claims = jwt.decode(alice.token or "", options={"verify_signature": False})
    unsigned = jwt.encode(claims, key=None, algorithm="none")  # type: ignore[arg-type]
    assert (await alice.call("GET", "/folders", token=unsigned))[0] == 401
    other = jwt.encode(claims, "another key, long enough for HS256", algorithm="HS256")
    assert (await alice.call("GET", "/folders", token=other))[0] == 401
    key = ensure_jwt_key(api_server.server.root)
    hs512 = jwt.encode(claims, key, algorithm="HS512")
    assert (await alice.call("GET", "/folders", token=hs512))[0] == 401
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, key, algorithm="HS256")
    status, body = await alice.call("GET", "/folders", token=expired)
    assert status == 401 and body == {"error": "token expired"}
    forged = jwt.encode(
        {**claims, "sub": BOB[0]}, "a guessed key, long enough for HS256", algorithm="HS256"
    )
    assert (await alice.call("GET", "/folders", token=forged))[0] == 401


async def test_a_password_change_revokes_tokens(
    api_server: ApiServer, session: aiohttp.ClientSession, admin: ApiClient
) -> None:
    status, _ = await admin.call(
        "POST", "/admin/users", json={"username": "temp", "password": "one"}
    )
    assert status == 201
    user = ApiClient(session, api_server.base)
    await user.login("temp@example.test", "one")
    assert (await user.call("GET", "/folders"))[0] == 200
    status, _ = await admin.call("PUT", "/admin/users/temp/password", json={"password": "two"})
    assert status == 200
    status, body = await user.call("GET", "/folders")
    assert status == 401 and body == {"error": "token revoked"}
    await user.login("temp@example.test", "two")
    assert (await user.call("GET", "/folders"))[0] == 200


async def test_failed_logins_lock_out_with_429_and_retry_after(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    address = "locked@example.test"
    users = {address: ("right", False)}
    with start_api_server(tmp_path, users, auth={"max_failures": 5, "lockout_seconds": 60}) as s:
        await _lock_out(ApiClient(session, s.base), address)


async def _lock_out(client: ApiClient, address: str) -> None:
    statuses = []
    for _ in range(6):
        status, _ = await client.call(
            "POST", "/auth/login", json={"username": address, "password": "wrong"}
        )
        statuses.append(status)
    assert statuses[:5] == [401] * 5 and statuses[5] == 429
    status, headers, body = await client.raw(
        "POST", "/auth/login", json={"username": address, "password": "right"}
    )
    assert status == 429 and int(headers["Retry-After"]) > 0 and "error" in body


# -- folders and messages ---------------------------------------------------------------------


async def test_folders_list_names_totals_and_unread(alice: ApiClient) -> None:
    status, body = await alice.call("GET", "/folders")
    assert status == 200
    folders = {f["name"]: f for f in body["folders"]}
    assert {"INBOX", "Sent", "Drafts", "Trash"} <= set(folders)
    assert folders["INBOX"]["total"] >= 2 and folders["INBOX"]["unread"] >= 1
    assert folders["Sent"]["special_use"] == "\\Sent"


async def test_listing_is_newest_first_with_summaries_and_paging(alice: ApiClient) -> None:
    status, body = await alice.call("GET", "/folders/INBOX/messages", params={"limit": "1"})
    assert status == 200 and body["total"] >= 2 and len(body["messages"]) == 1
    top = body["messages"][0]
    status, page2 = await alice.call(
        "GET", "/folders/INBOX/messages", params={"limit": "1", "offset": "1"}
    )
    assert page2["messages"][0]["uid"] < top["uid"]
    status, full = await alice.call("GET", "/folders/INBOX/messages")
    by_subject = {m["subject"]: m for m in full["messages"]}
    report = by_subject["Report attached"]
    assert report["has_attachments"] is True and report["flags"] == ["\\Seen"]
    assert report["from"] == [{"name": "Dave", "address": "dave@remote.test"}]
    assert report["preview"].startswith("Text version")
    plans = by_subject["Café plans"]
    assert plans["has_attachments"] is False and plans["flags"] == []
    assert plans["date"] == "2026-11-02T10:00:00+00:00"
    assert plans["size"] > 0 and "internal_date" in plans


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "1001"}, {"offset": "-1"}, {"limit": "x"}, {"since": "soon"}],
)
async def test_listing_parameters_are_checked(alice: ApiClient, params: dict[str, str]) -> None:
    status, body = await alice.call("GET", "/folders/INBOX/messages", params=params)
    assert status == 400 and "error" in body


async def test_listing_search(alice: ApiClient) -> None:
    async def subjects(**params: str) -> list[str]:
        status, body = await alice.call("GET", "/folders/INBOX/messages", params=params)
        assert status == 200, body
        return sorted(m["subject"] for m in body["messages"])

    assert await subjects(**{"from": "carol"}) == ["Café plans"]
    assert await subjects(subject="report") == ["Report attached"]
    assert await subjects(text="café") == ["Café plans"]
    assert await subjects(unseen="true") == ["Café plans"]
    assert await subjects(to="nobody") == []
    assert "Report attached" in await subjects(since="2000-01-01")
    assert await subjects(before="2000-01-01") == []


async def test_raw_and_parsed_message(alice: ApiClient) -> None:
    _, listing = await alice.call("GET", "/folders/INBOX/messages", params={"subject": "report"})
    uid = listing["messages"][0]["uid"]
    status, headers, raw = await alice.raw("GET", f"/folders/INBOX/messages/{uid}")
    assert status == 200 and headers["Content-Type"] == "message/rfc822"
    assert b"Report attached" in raw
    status, parsed = await alice.call(
        "GET", f"/folders/INBOX/messages/{uid}", params={"format": "json"}
    )
    assert status == 200
    assert parsed["subject"] == "Report attached" and parsed["text"].startswith("Text version")
    assert "<script" not in parsed["html"] and "onclick" not in parsed["html"]
    assert "<b>version</b>" in parsed["html"]
    (attachment,) = parsed["attachments"]
    assert attachment["filename"] == "r.pdf" and attachment["content_type"] == "application/pdf"
    status, raw_html = await alice.call(
        "GET", f"/folders/INBOX/messages/{uid}", params={"format": "json", "raw_html": "1"}
    )
    assert "<script>" in raw_html["html"]
    status, cut = await alice.call(
        "GET", f"/folders/INBOX/messages/{uid}", params={"format": "json", "maxBytes": "4"}
    )
    assert cut["text"] == "Text" and cut["text_truncated"] is True
    status, headers, content = await alice.raw(
        "GET", f"/folders/INBOX/messages/{uid}/attachments/{attachment['id']}"
    )
    assert status == 200 and content == b"%PDF-1.4 fake"
    assert headers["Content-Type"] == "application/pdf"
    assert "filename*=UTF-8''r.pdf" in headers["Content-Disposition"]
    status, body = await alice.call("GET", f"/folders/INBOX/messages/{uid}/attachments/9")
    assert status == 404 and "error" in body


async def test_missing_things_are_404_and_bad_uids_400(alice: ApiClient) -> None:
    for path in (
        "/folders/Nope/messages",
        "/folders/INBOX/messages/999999",
        "/folders/INBOX/messages/999999/attachments/1",
    ):
        status, body = await alice.call("GET", path)
        assert status == 404 and "error" in body, path
    status, body = await alice.call("GET", "/folders/INBOX/messages/abc")
    assert status == 400
    status, body = await alice.call("GET", "/folders/..%2F..%2Fetc/messages")
    assert status in (400, 404) and "error" in body


async def test_append_flags_move_copy_delete(alice: ApiClient, api_server: ApiServer) -> None:
    status, body = await alice.call(
        "POST",
        "/folders/INBOX/messages",
        data=b"Subject: appended\r\n\r\nbody\r\n",
        headers={"Content-Type": "message/rfc822"},
    )
    assert status == 201 and body["folder"] == "INBOX"
    uid = body["uid"]
    path = f"/folders/INBOX/messages/{uid}/flags"
    status, body = await alice.call("PATCH", path, json={"flags": ["\\Seen", "$Label1"]})
    assert status == 200 and body["flags"] == ["\\Seen", "$Label1"]
    status, body = await alice.call(
        "PATCH", path, json={"add": ["\\Flagged"], "remove": ["$Label1"]}
    )
    assert status == 200 and body["flags"] == ["\\Seen", "\\Flagged"]
    for bad in ({"flags": "x"}, {"flags": ["bad flag"]}, {}, {"flags": [], "add": []}):
        assert (await alice.call("PATCH", path, json=bad))[0] == 400
    status, body = await alice.call(
        "POST", f"/folders/INBOX/messages/{uid}/copy", json={"folder": "Archive"}
    )
    assert status == 201 and body["folder"] == "Archive"
    status, body = await alice.call(
        "POST", f"/folders/INBOX/messages/{uid}/move", json={"folder": "Trash"}
    )
    assert status == 201
    trash_uid = body["uid"]
    assert (await alice.call("GET", f"/folders/INBOX/messages/{uid}"))[0] == 404
    _, trashed = await alice.call("GET", f"/folders/Trash/messages/{trash_uid}?format=json")
    assert trashed["flags"] == ["\\Seen", "\\Flagged"]
    status, _ = await alice.call("DELETE", f"/folders/Trash/messages/{trash_uid}")
    assert status == 204
    assert (await alice.call("DELETE", f"/folders/Trash/messages/{trash_uid}"))[0] == 404


async def test_folder_create_rename_delete(alice: ApiClient) -> None:
    assert (await alice.call("POST", "/folders", json={"name": "Projects/2026"}))[0] == 201
    status, body = await alice.call("POST", "/folders", json={"name": "Projects/2026"})
    assert status == 409 and "error" in body
    status, _ = await alice.call("PATCH", "/folders/Projects%2F2026", json={"name": "Old"})
    assert status == 200
    names = [f["name"] for f in (await alice.call("GET", "/folders"))[1]["folders"]]
    assert "Old" in names and "Projects/2026" not in names
    assert (await alice.call("DELETE", "/folders/Old"))[0] == 204
    assert (await alice.call("POST", "/folders", json={"name": "../x"}))[0] == 400
    assert (await alice.call("POST", "/folders", json={"name": 7}))[0] == 400


# -- sending ---------------------------------------------------------------------------------


async def test_send_to_a_local_user_keeps_a_copy_in_sent(
    alice: ApiClient, bob: ApiClient, api_server: ApiServer
) -> None:
    attachment = base64.b64encode(b"hello file").decode()
    status, body = await alice.call(
        "POST",
        "/messages/send",
        json={
            "to": "bob@example.test",
            "subject": "Lunch?",
            "body": "At noon.",
            "html": "<p>At <b>noon</b>.</p>",
            "attachments": [
                {"filename": "a.txt", "content_type": "text/plain", "content": attachment}
            ],
        },
    )
    assert status == 200, body
    assert body["delivered"] == ["bob@example.test"] and body["queued"] == []
    _, listing = await bob.call("GET", "/folders/INBOX/messages", params={"subject": "Lunch"})
    (item,) = listing["messages"]
    _, parsed = await bob.call("GET", f"/folders/INBOX/messages/{item['uid']}?format=json")
    assert parsed["from"] == [{"name": "", "address": "alice@example.test"}]
    assert parsed["text"].strip() == "At noon." and "<b>noon</b>" in parsed["html"]
    assert parsed["attachments"][0]["filename"] == "a.txt"
    assert parsed["message_id"] == body["message_id"]
    _, sent = await alice.call(
        "GET", f"/folders/{body['sent_folder']}/messages/{body['sent_uid']}?format=json"
    )
    assert sent["subject"] == "Lunch?" and sent["flags"] == ["\\Seen"]


async def test_reply_sets_threading_headers_and_answered(alice: ApiClient, bob: ApiClient) -> None:
    _, listing = await alice.call("GET", "/folders/INBOX/messages", params={"subject": "café"})
    uid = listing["messages"][0]["uid"]
    status, body = await alice.call(
        "POST",
        "/messages/send",
        json={
            "to": "bob@example.test",
            "body": "Yes!",
            "reference": {"folder": "INBOX", "uid": uid, "action": "reply"},
        },
    )
    assert status == 200, body
    _, sent = await alice.call(
        "GET", f"/folders/{body['sent_folder']}/messages/{body['sent_uid']}?format=json"
    )
    assert sent["subject"] == "Re: Café plans"
    assert sent["in_reply_to"] == "<plans@remote.test>"
    assert sent["references"] == ["<plans@remote.test>"]
    _, original = await alice.call("GET", f"/folders/INBOX/messages/{uid}?format=json")
    assert "\\Answered" in original["flags"]


async def test_forward_attaches_the_original_and_flags_it(alice: ApiClient) -> None:
    _, listing = await alice.call("GET", "/folders/INBOX/messages", params={"subject": "report"})
    uid = listing["messages"][0]["uid"]
    status, body = await alice.call(
        "POST",
        "/messages/send",
        json={
            "to": ["Bob <bob@example.test>"],
            "body": "FYI",
            "reference": {"folder": "INBOX", "uid": uid, "action": "forward"},
        },
    )
    assert status == 200, body
    _, sent = await alice.call(
        "GET", f"/folders/{body['sent_folder']}/messages/{body['sent_uid']}?format=json"
    )
    assert sent["subject"] == "Fwd: Report attached"
    assert any(a["content_type"] == "message/rfc822" for a in sent["attachments"]) or any(
        a["filename"] == "r.pdf" for a in sent["attachments"]
    )
    _, original = await alice.call("GET", f"/folders/INBOX/messages/{uid}?format=json")
    assert "$Forwarded" in original["flags"]


async def test_drafts_are_saved_not_sent(alice: ApiClient, bob: ApiClient) -> None:
    status, body = await alice.call(
        "POST",
        "/messages/send",
        json={"to": "bob@example.test", "subject": "Unfinished", "body": "...", "draft": True},
    )
    assert status == 201 and body["folder"] == "Drafts"
    _, draft = await alice.call("GET", f"/folders/Drafts/messages/{body['uid']}?format=json")
    assert set(draft["flags"]) == {"\\Draft", "\\Seen"}
    _, listing = await bob.call("GET", "/folders/INBOX/messages", params={"subject": "Unfinished"})
    assert listing["messages"] == []


async def test_send_to_remote_goes_to_the_queue(alice: ApiClient, api_server: ApiServer) -> None:
    status, body = await alice.call(
        "POST", "/messages/send", json={"to": "x@remote.test", "subject": "out", "body": "b"}
    )
    assert status == 200 and body["queued"] == ["x@remote.test"]


@pytest.mark.parametrize(
    "payload",
    [
        {"subject": "no recipients", "body": "x"},
        {"to": "not an address", "body": "x"},
        {"to": "a@example.test", "subject": "two\r\nlines"},
        {"to": "a@example.test", "attachments": [{"filename": "a", "content": "***"}]},
        {"to": "a@example.test", "reference": {"folder": "INBOX", "uid": 1, "action": "x"}},
    ],
)
async def test_bad_send_requests_are_400(alice: ApiClient, payload: dict[str, Any]) -> None:
    status, body = await alice.call("POST", "/messages/send", json=payload)
    assert status == 400 and "error" in body


async def test_send_to_an_unknown_local_user_fails_with_the_reason(alice: ApiClient) -> None:
    status, body = await alice.call(
        "POST", "/messages/send", json={"to": "ghost@example.test", "body": "x"}
    )
    assert status == 400 and "ghost@example.test" in body["failed"]


# -- admin -----------------------------------------------------------------------------------


async def test_admin_users_crud_and_validation(admin: ApiClient, alice: ApiClient) -> None:
    status, body = await admin.call(
        "POST",
        "/admin/users",
        json={"username": "carol", "domain": "example.test", "password": "pw", "quota_mb": 5},
    )
    assert status == 201 and body["address"] == "carol@example.test" and body["quota_mb"] == 5
    assert (await admin.call("POST", "/admin/users", json={"username": "carol", "password": "pw"}))[
        0
    ] == 409
    for bad in (
        {"username": "Bad Name", "password": "x"},
        {"username": "ok", "password": ""},
        {"username": "ok", "password": "x" * 1025},
        {"username": "ok", "password": "x", "quota_mb": 0},
        {"username": "ok", "password": "x", "quota_mb": 1048577},
        {"username": "ok", "password": "x", "admin": "yes"},
    ):
        status, body = await admin.call("POST", "/admin/users", json=bad)
        assert status == 400 and "error" in body, bad
    status, body = await admin.call(
        "POST", "/admin/users", json={"username": "x", "domain": "nowhere.test", "password": "p"}
    )
    assert status == 404
    status, body = await admin.call("GET", "/admin/users/carol", params={"domain": "example.test"})
    assert status == 200 and body["enabled"] is True
    status, body = await admin.call(
        "PATCH", "/admin/users/carol", json={"enabled": False, "quota_mb": 7}
    )
    assert status == 200 and body["enabled"] is False and body["quota_mb"] == 7
    status, body = await admin.call("GET", "/admin/users")
    assert "carol@example.test" in [u["address"] for u in body["users"]]
    assert (await admin.call("DELETE", "/admin/users/carol"))[0] == 204
    assert (await admin.call("GET", "/admin/users/carol"))[0] == 404
    assert (await admin.call("DELETE", "/admin/users/root"))[0] == 400
    for method, path in (
        ("GET", "/admin/users"),
        ("POST", "/admin/users"),
        ("GET", "/admin/users/bob"),
        ("PATCH", "/admin/users/bob"),
        ("DELETE", "/admin/users/bob"),
        ("PUT", "/admin/users/bob/password"),
        ("GET", "/aliases"),
        ("POST", "/aliases"),
        ("DELETE", "/aliases/x"),
    ):
        status, body = await alice.call(method, path, json={})
        assert status == 403 and body == {"error": "admin only"}, (method, path)


async def test_aliases_admin(
    admin: ApiClient, session: aiohttp.ClientSession, api_server: ApiServer
) -> None:
    status, body = await admin.call(
        "POST", "/aliases", json={"pattern": "sales@example.test", "target": "alice@example.test"}
    )
    assert status == 201, body
    status, body = await admin.call("GET", "/aliases")
    assert {"pattern": "sales@example.test", "target": "alice@example.test"} in body["aliases"]
    assert (await admin.call("DELETE", "/aliases/sales@example.test"))[0] == 204
    assert (await admin.call("DELETE", "/aliases/sales@example.test"))[0] == 404


# -- isolation -------------------------------------------------------------------------------


async def test_no_route_reaches_another_users_mail(alice: ApiClient, bob: ApiClient) -> None:
    """Every mail route, with Bob's token and Alice's folder names and UIDs: Bob only ever
    reaches his own mailbox, and Alice's messages stay as they were."""
    await alice.call("POST", "/folders", json={"name": "Private"})
    _, listing = await alice.call("GET", "/folders/INBOX/messages")
    before = {m["uid"]: m["flags"] for m in listing["messages"]}
    _, bob_listing = await bob.call("GET", "/folders/INBOX/messages")
    bob_uids = {m["uid"] for m in bob_listing["messages"]}
    only_alice = set(before) - bob_uids
    assert only_alice
    uid = max(only_alice)
    secret = [b"Caf\xc3\xa9", b"Report attached", b"%PDF", "Café".encode()]
    routes: list[tuple[str, str, Any]] = [
        ("GET", "/folders/Private/messages", None),
        ("PATCH", "/folders/Private", {"name": "Stolen"}),
        ("DELETE", "/folders/Private", None),
        ("GET", f"/folders/INBOX/messages/{uid}", None),
        ("GET", f"/folders/INBOX/messages/{uid}?format=json", None),
        ("GET", f"/folders/INBOX/messages/{uid}/attachments/2", None),
        ("PATCH", f"/folders/INBOX/messages/{uid}/flags", {"flags": ["\\Deleted"]}),
        ("POST", f"/folders/INBOX/messages/{uid}/move", {"folder": "Trash"}),
        ("POST", f"/folders/INBOX/messages/{uid}/copy", {"folder": "Trash"}),
        ("DELETE", f"/folders/INBOX/messages/{uid}", None),
        (
            "POST",
            "/messages/send",
            {"to": BOB[0], "reference": {"folder": "INBOX", "uid": uid, "action": "forward"}},
        ),
    ]
    for method, path, payload in routes:
        status, body = await bob.call(method, path, json=payload)
        assert status == 404, (method, path, status, body)
        text = body if isinstance(body, bytes) else json.dumps(body).encode()
        assert not any(marker in text for marker in secret), (method, path)
    _, after = await alice.call("GET", "/folders/INBOX/messages")
    # Every message Alice had is there with its flags. (New mail may have arrived meanwhile:
    # the relay bounces an earlier test's message to remote.test into this INBOX.)
    now = {m["uid"]: m["flags"] for m in after["messages"]}
    assert {uid: now.get(uid) for uid in before} == before
    assert (await alice.call("GET", "/folders/Private/messages"))[0] == 200


# -- CORS and limits -------------------------------------------------------------------------


async def test_cors_on_every_response_and_204_preflight(
    api_server: ApiServer, session: aiohttp.ClientSession
) -> None:
    client = ApiClient(session, api_server.base)
    status, headers, _ = await client.raw(
        "OPTIONS",
        "/folders/INBOX/messages",
        headers={"Origin": "https://app.test", "Access-Control-Request-Method": "GET"},
    )
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    for method, path in (("GET", "/folders"), ("GET", "/health"), ("GET", "/nope")):
        status, headers, _ = await client.raw(method, path)
        assert headers.get("Access-Control-Allow-Origin") == "*", (method, path, status)


async def test_unknown_routes_and_methods_are_json_errors(alice: ApiClient) -> None:
    status, body = await alice.call("GET", "/no/such/route")
    assert status == 404 and body == {"error": "not found"}
    status, body = await alice.call("PUT", "/folders")
    assert status == 405 and "error" in body


async def test_oversized_json_is_413(alice: ApiClient) -> None:
    status, body = await alice.call("POST", "/folders", data=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert status == 413 and "error" in body


def test_curl_login_and_list(api_server: ApiServer) -> None:
    curl = shutil.which("curl")
    assert curl is not None, "curl is needed for this test (Debian package curl)"
    out = subprocess.run(
        [curl, "-sS", "-X", "POST", "-H", "Content-Type: application/json",
         "-d", json.dumps({"username": ALICE[0], "password": ALICE[1]}),
         api_server.base + "/auth/login"],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    token = json.loads(out.stdout)["token"]
    out = subprocess.run(
        [curl, "-sS", "-H", f"Authorization: Bearer {token}", api_server.base + "/folders"],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    assert "INBOX" in [f["name"] for f in json.loads(out.stdout)["folders"]]
