"""The outbound relay end to end: ``rmail serve`` sending to a loopback MX found through a
loopback DNS server, with retries, bounces, DKIM, restarts and the queue CLI.

The internet is stood in for by real local peers: ``DnsServer`` (dnspython, UDP and TCP on
127.0.0.1) answers for ``remote.test``, and ``MxPeer`` (aiosmtpd) is its mail server.
``relay.port`` points MX connections at the peer's port instead of 25.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dkim
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from conftest import RunningServer, clean_env, make_config
from dns_server import DnsServer
from mx_peer import MxPeer, StallingPeer, refused_port
from smtp_helpers import CHEAP_AUTH, HOSTNAME, connect, messages, quit_quietly, wait_until

from rmail.store import Store
from rmail.store.keys import ensure_tls_pair
from rmail.store.queue import Queue

PASSWORD = "alice-secret"
ZONE = {
    "remote.test": {"MX": ["10 mx.remote.test."]},
    "mx.remote.test": {"A": ["127.0.0.1"]},
    "nullmx.test": {"MX": ["0 ."]},
    "backup.test": {"MX": ["10 down.backup.test.", "20 mx.remote.test."]},
    "down.backup.test": {"A": ["127.0.0.2"]},
}


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as server:
        yield server


class Relaying:
    """A running rmail whose relay talks to the given DNS server, and alice to send."""

    def __init__(self, tmp_path: Path, dns: DnsServer, mx_port: int, **relay: Any) -> None:
        self.tmp_path = tmp_path
        self.settings = {
            "nameservers": [dns.address],
            "port": mx_port,
            "retry_initial": 1,
            "retry_max": 2,
            "timeout": 5,
            **relay,
        }
        self.config_path = self._write_config()
        self.store = Store.open(tmp_path / "data", auth=CHEAP_AUTH, hostname=HOSTNAME)
        self.store.accounts.add_domain("example.test")
        self.store.create_user("alice@example.test", PASSWORD)
        self.queue = Queue(tmp_path / "data")
        self.server: RunningServer | None = None

    def _write_config(self) -> Path:
        return make_config(
            self.tmp_path, relay=self.settings, smtp={"plaintext_auth_on_loopback": True}
        )

    def reconfigure(self, **relay: Any) -> None:
        self.settings.update(relay)
        self.config_path = self._write_config()

    def start(self, **env: str) -> RunningServer:
        server = RunningServer(self.config_path)
        server.env.update(env)
        self.server = server.start()
        return self.server

    def stop(self) -> None:
        if self.server is not None:
            code = self.server.stop()
            assert code == 0, self.server.stderr_text()
            self.server = None

    def submit(self, to: list[str], subject: str = "Hello", body: str = "Hi there.\n") -> None:
        assert self.server is not None
        message = EmailMessage()
        message["From"] = "Alice <alice@example.test>"
        message["To"] = ", ".join(to)
        message["Subject"] = subject
        message.set_content(body)
        client = connect(self.server.ports["submission"], login=("alice@example.test", PASSWORD))
        try:
            refused = client.send_message(message, to_addrs=to)
            assert refused == {}
        finally:
            quit_quietly(client)

    def entries(self) -> list[Any]:
        return list(self.queue.entries())

    def rmail(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rmail", "--config", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
            check=False,
        )


@pytest.fixture
def relaying(tmp_path: Path) -> Iterator[Any]:
    made: list[Relaying] = []

    def make(dns: DnsServer, mx_port: int, **relay: Any) -> Relaying:
        r = Relaying(tmp_path, dns, mx_port, **relay)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
        r.store.close()


def _dkim_dns(relay: Relaying) -> dict[bytes, bytes]:
    """The TXT record ``rmail dkim show`` prints, as dkimpy's dnsfunc wants it."""
    shown = relay.rmail("dkim", "show", "example.test")
    assert shown.returncode == 0, shown.stderr
    line = shown.stdout.strip()
    name = line.split()[0]
    assert name == "rmail._domainkey.example.test."
    value = "".join(part for part in line.split('"')[1::2])
    assert value.startswith("v=DKIM1; k=rsa; p=")
    return {name.encode(): value.encode()}


def test_submitted_mail_reaches_the_mx_signed_with_dkim(
    dns_server: DnsServer, relaying: Any
) -> None:
    with MxPeer() as mx:
        relay = relaying(dns_server, mx.port)
        relay.start()
        relay.submit(["bob@remote.test", "carol@remote.test"], subject="Signed")
        (got,) = mx.wait(1)
        assert got.mail_from == "alice@example.test"
        assert sorted(got.rcpt_tos) == ["bob@remote.test", "carol@remote.test"]
        assert got.tls is False  # the peer offers no STARTTLS; opportunistic means clear text
        assert got.content.startswith(b"DKIM-Signature:")
        records = _dkim_dns(relay)
        assert dkim.verify(got.content, dnsfunc=lambda name, timeout=5: records.get(name))
        wait_until(lambda: relay.entries() == [], 10, "the queue to empty")
        time.sleep(0.3)
        assert len(mx.received) == 1
        assert ("mx.remote.test.", "A") in dns_server.queries


def test_a_451_is_retried_and_delivered_once(dns_server: DnsServer, relaying: Any) -> None:
    with MxPeer(defer_next=1) as mx:
        relay = relaying(dns_server, mx.port)
        relay.start()
        relay.submit(["bob@remote.test"], subject="Deferred once")
        (got,) = mx.wait(1, timeout=20)
        assert b"Deferred once" in got.content
        wait_until(lambda: relay.entries() == [], 10, "the queue to empty")
        time.sleep(0.5)
        assert len(mx.received) == 1


def test_a_550_bounces_to_the_local_sender_and_the_others_are_sent_once(
    dns_server: DnsServer, relaying: Any
) -> None:
    with MxPeer(refuse={"nobody@remote.test": "550 5.1.1 No such user here"}) as mx:
        relay = relaying(dns_server, mx.port)
        relay.start()
        relay.submit(["nobody@remote.test", "bob@remote.test"], subject="Partly wrong")
        (got,) = mx.wait(1)
        assert got.rcpt_tos == ["bob@remote.test"]
        wait_until(lambda: len(messages(relay.store, "alice@example.test")) == 1, 10, "the bounce")
        (raw,) = messages(relay.store, "alice@example.test")
        bounce = email.message_from_bytes(raw, policy=email.policy.default)
        assert raw.startswith(b"Return-Path: <>\r\n")
        assert bounce.get_content_type() == "multipart/report"
        assert bounce.get_param("report-type") == "delivery-status"
        human, status, headers = bounce.iter_parts()
        assert "No such user here" in human.get_content()
        status_text = status.as_bytes().decode()
        assert "Final-Recipient: rfc822; nobody@remote.test" in status_text
        assert "Action: failed" in status_text
        assert "Status: 5.1.1" in status_text
        assert "Diagnostic-Code: smtp; 550 5.1.1 No such user here" in status_text
        assert "bob@remote.test" not in status_text
        assert headers.get_content_type() == "text/rfc822-headers"
        assert "Subject: Partly wrong" in headers.as_bytes().decode()
        wait_until(lambda: relay.entries() == [], 10, "the queue to empty")
        time.sleep(0.5)
        assert len(mx.received) == 1


def test_the_next_mx_is_tried_when_the_first_is_down(dns_server: DnsServer, relaying: Any) -> None:
    with MxPeer() as mx:
        relay = relaying(dns_server, mx.port)
        relay.start()
        relay.submit(["bob@backup.test"], subject="Via the backup MX")
        (got,) = mx.wait(1)
        assert got.rcpt_tos == ["bob@backup.test"]
        assert ("down.backup.test.", "A") in dns_server.queries


def test_null_mx_and_unknown_domains_bounce_at_once(dns_server: DnsServer, relaying: Any) -> None:
    with MxPeer() as mx:
        relay = relaying(dns_server, mx.port)
        relay.start()
        relay.submit(["a@nullmx.test", "b@nowhere.test"], subject="Nowhere")
        wait_until(lambda: len(messages(relay.store, "alice@example.test")) >= 1, 10, "the bounce")
        text = b"".join(messages(relay.store, "alice@example.test")).decode()
        assert "Final-Recipient: rfc822; a@nullmx.test" in text
        assert "Status: 5.1.10" in text
        assert "Final-Recipient: rfc822; b@nowhere.test" in text
        assert "Status: 5.1.2" in text
        wait_until(lambda: relay.entries() == [], 10, "the queue to empty")
        assert mx.received == []


def test_refused_connections_are_retried_and_survive_a_restart(
    dns_server: DnsServer, relaying: Any
) -> None:
    port = refused_port()
    relay = relaying(dns_server, port, retry_initial=2, retry_max=2)
    relay.start()
    relay.submit(["bob@remote.test"], subject="Across a restart")
    wait_until(lambda: any(e.attempts >= 1 for e in relay.entries()), 10, "a failed first attempt")
    (entry,) = relay.entries()
    (rcpt,) = entry.recipients
    assert rcpt.status == "pending" and "refused" in (rcpt.last_error or "").lower()
    relay.stop()
    with MxPeer() as mx:
        # The restarted server finds the peer where the first attempt was refused.
        relay.reconfigure(port=mx.port)
        relay.start()
        (got,) = mx.wait(1, timeout=20)
        assert b"Across a restart" in got.content
        wait_until(lambda: relay.entries() == [], 10, "the queue to empty")
        time.sleep(0.5)
        assert len(mx.received) == 1


def test_a_stalled_server_times_out_and_is_retried(dns_server: DnsServer, relaying: Any) -> None:
    with StallingPeer() as peer:
        relay = relaying(dns_server, peer.port, timeout=1, retry_initial=60, retry_max=60)
        relay.start()
        relay.submit(["bob@remote.test"], subject="Stalled")
        wait_until(lambda: any(e.attempts >= 1 for e in relay.entries()), 15, "a timeout")
        (entry,) = relay.entries()
        assert "timed out" in (entry.recipients[0].last_error or "")
        assert entry.next_try > time.time() + 30
        assert peer.connections >= 1


def test_the_queue_cli_lists_shows_retries_and_deletes(
    dns_server: DnsServer, relaying: Any
) -> None:
    port = refused_port()
    relay = relaying(dns_server, port, retry_initial=3600, retry_max=3600)
    relay.start()
    relay.submit(["bob@remote.test"], subject="Queued for the CLI")
    relay.submit(["carol@remote.test"], subject="Second")
    wait_until(
        lambda: len(relay.entries()) == 2 and all(e.attempts == 1 for e in relay.entries()),
        10,
        "two deferred entries",
    )
    listed = relay.rmail("queue", "list")
    assert listed.returncode == 0, listed.stderr
    assert "2 queued messages" in listed.stdout
    assert "from <alice@example.test>" in listed.stdout and "refused" in listed.stdout.lower()
    first, second = relay.entries()
    shown = relay.rmail("queue", "show", first.id)
    assert shown.returncode == 0
    assert "to: <bob@remote.test> pending" in shown.stdout
    assert "Subject: Queued for the CLI" in shown.stdout
    assert relay.rmail("queue", "show", "nope").returncode == 1
    assert relay.rmail("queue", "show", "../../etc").returncode == 1
    retried = relay.rmail("queue", "retry", first.id)
    assert retried.returncode == 0, retried.stderr
    wait_until(lambda: any(e.attempts == 2 for e in relay.entries()), 10, "the retry to be tried")
    deleted = relay.rmail("queue", "delete", second.id)
    assert deleted.returncode == 0
    assert [e.id for e in relay.entries()] == [first.id]
    flushed = relay.rmail("queue", "flush")
    assert "1 queued message will be sent again now" in flushed.stdout
    wait_until(lambda: relay.entries()[0].attempts == 3, 10, "the flush to be tried")


def test_dkim_show_refuses_a_domain_not_hosted(dns_server: DnsServer, relaying: Any) -> None:
    relay = relaying(dns_server, refused_port())
    shown = relay.rmail("dkim", "show", "elsewhere.test")
    assert shown.returncode != 0 and "not a hosted domain" in shown.stderr
    first = relay.rmail("dkim", "show", "example.test").stdout
    assert first == relay.rmail("dkim", "show", "example.test").stdout
    key = relay.tmp_path / "data" / "secrets" / "dkim" / "example.test.key"
    assert key.stat().st_mode & 0o077 == 0


def _peer_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for the peer with a self-signed certificate for ``localhost``."""
    cert, key = ensure_tls_pair(tmp_path / "peer", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


def test_mx_delivery_uses_starttls_when_offered(
    dns_server: DnsServer, relaying: Any, tmp_path: Path
) -> None:
    context, _ = _peer_tls(tmp_path)  # not trusted by rmail: opportunistic TLS takes it anyway
    with MxPeer(smtp={"tls_context": context}) as mx:
        relay = relaying(dns_server, mx.port)
        relay.start()
        relay.submit(["bob@remote.test"], subject="Encrypted")
        (got,) = mx.wait(1)
        assert got.tls is True


def test_a_smarthost_gets_everything_over_verified_starttls_with_auth(
    dns_server: DnsServer, relaying: Any, tmp_path: Path
) -> None:
    context, cert = _peer_tls(tmp_path)
    logins: list[tuple[bytes, bytes]] = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        assert isinstance(data, LoginPassword)
        logins.append((data.login, data.password))
        ok = (data.login, data.password) == (b"relay-user", b"relay-pass")
        return AuthResult(success=ok, handled=False, auth_data=data)

    smtp = {"tls_context": context, "authenticator": authenticator, "auth_require_tls": True}
    with MxPeer(smtp=smtp) as smarthost:
        relay = relaying(
            dns_server,
            refused_port(),
            smarthost="localhost",
            smarthost_port=smarthost.port,
            smarthost_username="relay-user",
            smarthost_password="relay-pass",
        )
        relay.start(SSL_CERT_FILE=str(cert))  # the CA store rmail checks the smarthost against
        relay.submit(["bob@remote.test", "dave@elsewhere.test"], subject="Via the smarthost")
        (got,) = smarthost.wait(1)
        assert got.tls is True and got.login == "relay-user"
        assert sorted(got.rcpt_tos) == ["bob@remote.test", "dave@elsewhere.test"]
        assert logins == [(b"relay-user", b"relay-pass")]
        assert not any(name == "remote.test." for name, _ in dns_server.queries)


def test_a_smarthost_whose_certificate_fails_is_not_sent_to(
    dns_server: DnsServer, relaying: Any, tmp_path: Path
) -> None:
    context, _ = _peer_tls(tmp_path)
    with MxPeer(smtp={"tls_context": context}) as smarthost:
        relay = relaying(
            dns_server, refused_port(), smarthost="localhost", smarthost_port=smarthost.port
        )
        relay.start()  # the system CAs: the peer's self-signed certificate is not trusted
        relay.submit(["bob@remote.test"], subject="Must not leak")
        wait_until(lambda: any(e.attempts >= 1 for e in relay.entries()), 10, "an attempt")
        (entry,) = relay.entries()
        assert entry.recipients[0].status == "pending"
        assert "certificate" in (entry.recipients[0].last_error or "").lower()
        assert smarthost.received == []


def test_a_message_past_give_up_after_bounces_with_the_last_error(
    dns_server: DnsServer, relaying: Any
) -> None:
    relay = relaying(dns_server, refused_port(), give_up_after=3600)
    relay.start()
    original = b"From: alice@example.test\r\nSubject: Too old\r\n\r\nbody\r\n"
    entry = relay.queue.enqueue(original, "alice@example.test", ["bob@remote.test"])
    relay.queue.update(entry, created=time.time() - 7200)  # queued two hours ago
    wait_until(lambda: relay.entries() == [], 10, "the entry to expire")
    wait_until(lambda: len(messages(relay.store, "alice@example.test")) == 1, 10, "the bounce")
    text = messages(relay.store, "alice@example.test")[0].decode()
    assert "Status: 5.4.7" in text
    assert "gave up after 3600 s: mx.remote.test: connection refused" in text
    assert "Subject: Too old" in text


def test_failures_of_bounces_and_null_senders_never_bounce(
    dns_server: DnsServer, relaying: Any
) -> None:
    with MxPeer(refuse={"gone@remote.test": "550 5.1.1 Gone"}) as mx:
        relay = relaying(dns_server, mx.port)
        relay.start()
        for sender in ("", "MAILER-DAEMON@example.test"):
            relay.queue.enqueue(b"Subject: dsn\r\n\r\nx\r\n", sender, ["gone@remote.test"])
        # Written behind the server's back, as `rmail queue` would: it looks every second.
        wait_until(lambda: relay.entries() == [], 10, "both entries to be dropped")
        time.sleep(0.5)
        assert messages(relay.store, "alice@example.test") == []
        assert mx.received == []
        assert relay.entries() == []


def test_a_remote_senders_bounce_is_queued_with_a_null_sender(
    dns_server: DnsServer, relaying: Any
) -> None:
    with MxPeer(refuse={"gone@remote.test": "550 5.1.1 Gone"}) as mx:
        relay = relaying(dns_server, mx.port)
        relay.start()
        # A forward from a local alias to a remote address keeps the remote sender.
        relay.queue.enqueue(
            b"Subject: forwarded\r\n\r\nx\r\n", "someone@remote.test", ["gone@remote.test"]
        )
        (got,) = mx.wait(1)
        assert got.mail_from == "<>"  # aiosmtpd's spelling of the null sender
        assert got.rcpt_tos == ["someone@remote.test"]
        assert b"Final-Recipient: rfc822; gone@remote.test" in got.content
        assert b"Subject: forwarded" in got.content
