"""Webhooks against a running server: registered through the JSON API, received by a real
aiohttp server on loopback in the test, triggered by SMTP (smtplib), IMAP (imaplib) and the
API (aiohttp).

Each test uses its own account, so one test's hooks never see another's events. Waits are
on a condition with a deadline, never a sleep.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import imaplib
import json
import smtplib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import pytest
from aiohttp import web
from api_helpers import ApiClient, ApiServer, start_api_server
from line_client import LOOPBACK, TIMEOUT

from rmail.store.webhooks import EVENT_NAMES, MAX_WEBHOOKS

PASSWORD: Final = "hook-pw"
DOMAIN: Final = "example.test"
USERS: Final = (
    "crud",
    "bad",
    "limit",
    "smtp",
    "append",
    "flags",
    "imap",
    "deleted",
    "flaky",
    "hang",
    "alice",
    "bob",
)
# Long enough for a loaded machine; a passing test waits only as long as the server takes.
WAIT: Final = 20.0


def _address(user: str) -> str:
    return f"{user}@{DOMAIN}"


def _message(to: str, subject: str = "hello") -> bytes:
    return (
        f"From: Sender <sender@remote.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}.{to}>\r\n\r\nHello.\r\n"
    ).encode()


# -- the receiver ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


class Receiver:
    """A loopback HTTP server that records every POST. Per path it can answer a planned
    list of statuses first (then 200), or hang until the test ends."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.plans: dict[str, list[int]] = {}
        self.hanging: set[str] = set()
        self.release = asyncio.Event()
        self.port = 0
        self._changed = asyncio.Condition()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._changed:
            self.received.append(Received(request.path, dict(request.headers), body))
            self._changed.notify_all()
        if request.path in self.hanging:
            await self.release.wait()
        plan = self.plans.get(request.path)
        return web.Response(status=plan.pop(0) if plan else 200)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def wait_for(
        self, path: str, check: Callable[[list[Received]], bool], what: str
    ) -> list[Received]:
        """Wait until ``check`` holds for the requests to ``path``; return them."""
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: check(self.at(path))), WAIT)
            except TimeoutError:
                raise AssertionError(f"{what}: got {self.at(path)}") from None
        return self.at(path)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recv.handle)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server  # the asyncio.Server; port 0 needs the real port
    assert isinstance(server, asyncio.Server)
    recv.port = server.sockets[0].getsockname()[1]
    try:
        yield recv
    finally:
        recv.release.set()
        await runner.cleanup()


# -- the server and clients ------------------------------------------------------------------


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    users = {_address(u): (PASSWORD, False) for u in USERS}
    with start_api_server(
        tmp_path_factory.mktemp("webhooks"),
        users,
        auth={"max_failures": 1000},
        imap={"plaintext_auth_on_loopback": True},
        # Loopback receivers need private addresses; quick retries keep the test short.
        exchange_api={
            "webhook_allow_private": True,
            "webhook_retry_initial_ms": 50,
            "webhook_timeout": 3,
        },
    ) as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def _client(server: ApiServer, session: aiohttp.ClientSession, user: str) -> ApiClient:
    client = ApiClient(session, server.base)
    await client.login(_address(user), PASSWORD)
    return client


async def _register(client: ApiClient, url: str, events: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"url": url}
    if events is not None:
        body["events"] = events
    status, hook = await client.call("POST", "/webhooks", json=body)
    assert status == 201, hook
    assert isinstance(hook, dict)
    return hook


async def _append(client: ApiClient, to: str, subject: str = "hello") -> int:
    status, body = await client.call("POST", "/folders/INBOX/messages", data=_message(to, subject))
    assert status == 201, body
    return int(body["uid"])


def _smtp_deliver(port: int, to: str, subject: str) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(LOOPBACK, port, timeout=TIMEOUT) as client:
        return client.sendmail("sender@remote.test", [to], _message(to, subject))


def _verify(received: Received, secret: str) -> bool:
    expected = hmac.new(secret.encode(), received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(received.headers["X-Rmail-Signature"], f"sha256={expected}")


def _one(received: list[Received]) -> bool:
    return len(received) >= 1


# -- registering -----------------------------------------------------------------------------


async def test_create_shows_the_secret_once_list_hides_it_delete_removes(
    hook_server: ApiServer, session: aiohttp.ClientSession
) -> None:
    client = await _client(hook_server, session, "crud")
    hook = await _register(client, "https://hooks.example.org/rmail")
    assert hook["url"] == "https://hooks.example.org/rmail"
    assert hook["events"] == list(EVENT_NAMES)
    assert len(hook["secret"]) == 64 and int(hook["secret"], 16) >= 0
    status, listing = await client.call("GET", "/webhooks")
    assert status == 200
    assert listing == {
        "webhooks": [
            {
                "id": hook["id"],
                "url": hook["url"],
                "events": hook["events"],
                "created": hook["created"],
            }
        ]
    }
    status, _ = await client.call("DELETE", f"/webhooks/{hook['id']}")
    assert status == 204
    assert await client.call("GET", "/webhooks") == (200, {"webhooks": []})
    status, body = await client.call("DELETE", f"/webhooks/{hook['id']}")
    assert status == 404 and "error" in body


async def test_webhooks_need_a_login(
    hook_server: ApiServer, session: aiohttp.ClientSession
) -> None:
    client = ApiClient(session, hook_server.base)
    assert (await client.call("GET", "/webhooks"))[0] == 401
    assert (await client.call("POST", "/webhooks", json={"url": "https://a.example/"}))[0] == 401
    assert (await client.call("DELETE", "/webhooks/x"))[0] == 401


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": 5},
        {"url": "ftp://a.example/"},
        {"url": "https://"},
        {"url": "https://a.example/" + "x" * 2048},
        {"url": "https://a.example/", "events": "messageNew"},
        {"url": "https://a.example/", "events": []},
        {"url": "https://a.example/", "events": ["messageNew", "spam"]},
        {"url": "https://a.example/", "secret": "mine"},
    ],
)
async def test_bad_registrations_are_400(
    hook_server: ApiServer, session: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    client = await _client(hook_server, session, "bad")
    status, answer = await client.call("POST", "/webhooks", json=body)
    assert status == 400 and "error" in answer
    assert await client.call("GET", "/webhooks") == (200, {"webhooks": []})


async def test_an_eleventh_webhook_is_400(
    hook_server: ApiServer, session: aiohttp.ClientSession
) -> None:
    client = await _client(hook_server, session, "limit")
    for n in range(MAX_WEBHOOKS):
        await _register(client, f"https://a.example/{n}")
    status, answer = await client.call("POST", "/webhooks", json={"url": "https://a.example/x"})
    assert status == 400 and "at most" in answer["error"]


async def test_private_targets_are_refused_by_default(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    with start_api_server(tmp_path, {"dora@example.test": ("pw", False)}) as server:
        client = ApiClient(session, server.base)
        await client.login("dora@example.test", "pw")
        for url in (
            "http://127.0.0.1:9/",
            "http://localhost/",
            "http://[::1]/",
            "http://10.0.0.1/",
        ):
            status, answer = await client.call("POST", "/webhooks", json={"url": url})
            assert status == 400, (url, answer)
        await _register(client, "https://hooks.example.org/")


# -- events ----------------------------------------------------------------------------------


async def test_smtp_delivery_posts_message_new_signed_with_the_secret(
    hook_server: ApiServer, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    client = await _client(hook_server, session, "smtp")
    hook = await _register(client, receiver.url("/smtp"))
    refused = await asyncio.to_thread(
        _smtp_deliver, hook_server.server.ports["smtp"], _address("smtp"), "via-mx"
    )
    assert refused == {}
    [got] = await receiver.wait_for("/smtp", _one, "messageNew after SMTP")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Rmail-Event"] == "messageNew"
    assert _verify(got, hook["secret"])
    assert not _verify(got, "0" * 64)
    body = got.json
    assert body["event"] == "messageNew"
    assert body["account"] == _address("smtp")
    assert body["folder"] == "INBOX"
    assert isinstance(body["uid"], int) and body["uid"] > 0
    assert body["id"] == got.headers["X-Rmail-Delivery"]
    assert body["timestamp"].startswith("20")
    status, listing = await client.call("GET", "/folders/INBOX/messages")
    assert status == 200 and [m["uid"] for m in listing["messages"]] == [body["uid"]]


async def test_api_append_posts_message_new(
    hook_server: ApiServer, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    client = await _client(hook_server, session, "append")
    hook = await _register(client, receiver.url("/append"), ["messageNew"])
    uid = await _append(client, _address("append"))
    [got] = await receiver.wait_for("/append", _one, "messageNew after API append")
    assert got.json["uid"] == uid and got.json["event"] == "messageNew"
    assert _verify(got, hook["secret"])


async def test_api_flag_change_posts_flags_changed_with_the_current_flags(
    hook_server: ApiServer, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    client = await _client(hook_server, session, "flags")
    await _register(client, receiver.url("/flags"), ["flagsChanged"])
    uid = await _append(client, _address("flags"))  # messageNew: not wanted by this hook
    status, body = await client.call(
        "PATCH", f"/folders/INBOX/messages/{uid}/flags", json={"add": ["\\Flagged", "\\Seen"]}
    )
    assert status == 200, body
    [got] = await receiver.wait_for("/flags", _one, "flagsChanged after API PATCH")
    assert got.headers["X-Rmail-Event"] == "flagsChanged"
    assert got.json["uid"] == uid and got.json["folder"] == "INBOX"
    assert sorted(got.json["flags"]) == ["\\Flagged", "\\Seen"]
    assert all(r.json["event"] == "flagsChanged" for r in receiver.at("/flags"))


def _imap_store(port: int, user: str, uid: int) -> None:
    client = imaplib.IMAP4(LOOPBACK, port, timeout=TIMEOUT)
    try:
        assert client.login(user, PASSWORD)[0] == "OK"
        assert client.select("INBOX")[0] == "OK"
        status, _ = client.uid("STORE", str(uid), "+FLAGS", "(\\Answered)")
        assert status == "OK"
    finally:
        client.logout()


async def test_imap_store_posts_flags_changed(
    hook_server: ApiServer, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    client = await _client(hook_server, session, "imap")
    await _register(client, receiver.url("/imap"), ["flagsChanged"])
    uid = await _append(client, _address("imap"))
    await asyncio.to_thread(_imap_store, hook_server.server.ports["imap"], _address("imap"), uid)
    [got] = await receiver.wait_for("/imap", _one, "flagsChanged after IMAP STORE")
    assert got.json["event"] == "flagsChanged" and got.json["uid"] == uid
    assert got.json["flags"] == ["\\Answered"]


async def test_api_delete_posts_message_deleted_with_uids(
    hook_server: ApiServer, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    client = await _client(hook_server, session, "deleted")
    await _register(client, receiver.url("/deleted"), ["messageDeleted"])
    uid = await _append(client, _address("deleted"))
    status, _ = await client.call("DELETE", f"/folders/INBOX/messages/{uid}")
    assert status == 204
    [got] = await receiver.wait_for("/deleted", _one, "messageDeleted after API DELETE")
    assert got.headers["X-Rmail-Event"] == "messageDeleted"
    assert got.json["uids"] == [uid] and "uid" not in got.json
    assert got.json["folder"] == "INBOX"


async def test_a_failing_receiver_is_retried_until_it_answers_2xx(
    hook_server: ApiServer, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    client = await _client(hook_server, session, "flaky")
    hook = await _register(client, receiver.url("/flaky"), ["messageNew"])
    receiver.plans["/flaky"] = [500, 500]
    first_uid = await _append(client, _address("flaky"), "first")
    tries = await receiver.wait_for("/flaky", lambda r: len(r) >= 3, "three attempts")
    first_id = tries[0].headers["X-Rmail-Delivery"]
    assert [t.headers["X-Rmail-Delivery"] for t in tries] == [first_id] * 3
    assert [t.headers["X-Rmail-Attempt"] for t in tries] == ["1", "2", "3"]
    assert {t.body for t in tries} == {tries[0].body}  # the same signed body each time
    assert tries[0].json["uid"] == first_uid and _verify(tries[2], hook["secret"])
    # A later event arrives on its own; the first one was not sent again after its 200.
    second_uid = await _append(client, _address("flaky"), "second")
    got = await receiver.wait_for(
        "/flaky", lambda r: any(x.json["uid"] == second_uid for x in r), "the second event"
    )
    assert sum(r.headers["X-Rmail-Delivery"] == first_id for r in got) == 3


async def test_a_hanging_receiver_does_not_hold_up_smtp_delivery(
    hook_server: ApiServer, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    client = await _client(hook_server, session, "hang")
    await _register(client, receiver.url("/hang"))
    receiver.hanging.add("/hang")
    port = hook_server.server.ports["smtp"]
    refused = await asyncio.to_thread(_smtp_deliver, port, _address("hang"), "first")
    assert refused == {}
    # The hook is called and now waits for an answer that does not come...
    await receiver.wait_for("/hang", _one, "a POST to the hanging receiver")
    # ...while five more transactions complete, each with its message in the mailbox.
    for n in range(5):
        refused = await asyncio.to_thread(_smtp_deliver, port, _address("hang"), f"m{n}")
        assert refused == {}
    assert receiver.release.is_set() is False
    status, listing = await client.call("GET", "/folders/INBOX/messages")
    assert status == 200 and listing["total"] == 6


async def test_users_cannot_see_or_delete_each_others_hooks_or_get_their_events(
    hook_server: ApiServer, session: aiohttp.ClientSession, receiver: Receiver
) -> None:
    alice = await _client(hook_server, session, "alice")
    bob = await _client(hook_server, session, "bob")
    alices = await _register(alice, receiver.url("/alice"))
    assert await bob.call("GET", "/webhooks") == (200, {"webhooks": []})
    status, _ = await bob.call("DELETE", f"/webhooks/{alices['id']}")
    assert status == 404
    status, listing = await alice.call("GET", "/webhooks")
    assert [h["id"] for h in listing["webhooks"]] == [alices["id"]]

    await _register(bob, receiver.url("/bob"))
    bob_uid = await _append(bob, _address("bob"), "for-bob")
    await receiver.wait_for("/bob", _one, "Bob's own event")
    alice_uid = await _append(alice, _address("alice"), "for-alice")
    await receiver.wait_for("/alice", _one, "Alice's own event")
    assert [(r.json["account"], r.json["uid"]) for r in receiver.at("/alice")] == [
        (_address("alice"), alice_uid)
    ]
    assert [(r.json["account"], r.json["uid"]) for r in receiver.at("/bob")] == [
        (_address("bob"), bob_uid)
    ]
