"""Inbound authentication end to end: SPF, DKIM and DMARC on the MX port of ``rmail serve``.

The internet's DNS is played by ``tests/dns_server.py`` on loopback; mail is sent by smtplib
from 127.0.0.1, so an SPF record naming ``ip4:127.0.0.1`` passes and any other fails. DKIM
signatures are made with dkimpy and a key generated here; its public half is published in
the test DNS server. Two servers share that DNS: one with ``inbound.dmarc_reject`` off (the
default: results are only recorded), one with it on.
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import secrets
import smtplib
from collections.abc import Iterator
from typing import Final

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dns_server import DnsServer
from smtp_helpers import HOSTNAME, SmtpServer, connect, reply, start_smtp_server, with_marker

from rmail.smtp import replies

ALICE: Final = "alice@example.test"
USERS: Final = {ALICE: "alice-Pw-3b8e01c7"}
SELECTOR: Final = "sel1"
OUR_IP: Final = "127.0.0.1"


def _txt(text: str) -> str:
    """TXT rdata in zone-file syntax, split into strings of at most 255 octets."""
    chunks = [text[i : i + 255] for i in range(0, len(text), 255)] or [""]
    return " ".join(f'"{chunk}"' for chunk in chunks)


@pytest.fixture(scope="module")
def key_pem() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def dns(key_pem: bytes) -> Iterator[DnsServer]:
    private = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey)
    public_der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    dkim_key = f"v=DKIM1; k=rsa; p={base64.b64encode(public_der).decode()}"
    records = {
        "spf-pass.test": {"TXT": [_txt(f"v=spf1 ip4:{OUR_IP} -all")]},
        "spf-fail.test": {"TXT": [_txt("v=spf1 ip4:192.0.2.1 -all")]},
        "spf-soft.test": {"TXT": [_txt("v=spf1 ip4:192.0.2.1 ~all")]},
        "spf-none.test": {"A": ["192.0.2.7"]},  # exists, publishes nothing
        # Signs with SELECTOR; SPF passes for our IP; DMARC p=reject.
        "signed.test": {"TXT": [_txt(f"v=spf1 ip4:{OUR_IP} -all")]},
        f"{SELECTOR}._domainkey.signed.test": {"TXT": [_txt(dkim_key)]},
        "_dmarc.signed.test": {"TXT": [_txt("v=DMARC1; p=reject")]},
        # A domain that protects its name with p=reject and never sends from our IP.
        "bank.test": {"TXT": [_txt("v=spf1 ip4:192.0.2.1 -all")]},
        "_dmarc.bank.test": {"TXT": [_txt("v=DMARC1; p=reject; rua=mailto:d@bank.test")]},
        # p=reject for the domain itself, sp=none for its subdomains.
        "quiet.test": {"TXT": [_txt("v=spf1 -all")]},
        "_dmarc.quiet.test": {"TXT": [_txt("v=DMARC1; p=reject; sp=none")]},
    }
    with DnsServer(records) as server:
        server.servfail.add("spf-broken.test.")
        yield server


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory, dns: DnsServer) -> Iterator[SmtpServer]:
    """Default inbound settings: checks on, DMARC results recorded, nothing refused."""
    with start_smtp_server(
        tmp_path_factory.mktemp("mx"), USERS, relay={"nameservers": [dns.address]}
    ) as server:
        yield server


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, dns: DnsServer) -> Iterator[SmtpServer]:
    """``inbound.dmarc_reject`` on."""
    with start_smtp_server(
        tmp_path_factory.mktemp("strict"),
        USERS,
        relay={"nameservers": [dns.address]},
        inbound={"dmarc_reject": True},
    ) as server:
        yield server


# ------------------------------------------------------------------ helpers


def token() -> str:
    return f"tok-{secrets.token_hex(6)}"


def message(marker: str, sender: str, extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {marker}\r\n{extra}"
        f"Message-ID: <{marker}@test.invalid>\r\n\r\nHello.\r\n{marker}\r\n"
    ).encode()


def signed(marker: str, sender: str, key_pem: bytes, domain: str = "signed.test") -> bytes:
    plain = message(marker, sender)
    signature = dkim.sign(
        plain,
        SELECTOR.encode(),
        domain.encode(),
        key_pem,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    assert isinstance(signature, bytes)
    return signature + plain


def send(server: SmtpServer, mail_from: str, data: bytes) -> None:
    with connect(server.ports["smtp"]) as client:
        assert client.sendmail(mail_from, [ALICE], data) == {}


def stored(server: SmtpServer, marker: str) -> email.message.EmailMessage:
    found = with_marker(server.store, ALICE, marker)
    assert len(found) == 1, f"expected one message with {marker}, got {len(found)}"
    parsed = email.message_from_bytes(found[0], policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def results(server: SmtpServer, marker: str) -> list[str]:
    """The resinfos of our Authentication-Results field, unfolded, without the authserv-id."""
    fields = [
        " ".join(str(v).split())
        for v in stored(server, marker).get_all("Authentication-Results", [])
    ]
    ours = [f for f in fields if f.split(";")[0].strip() == HOSTNAME]
    assert len(ours) == 1, fields
    return [part.strip() for part in ours[0].split(";")[1:]]


def result_of(server: SmtpServer, marker: str, method: str) -> str:
    found = [r for r in results(server, marker) if r.startswith(f"{method}=")]
    assert len(found) == 1, found
    return found[0]


# ------------------------------------------------------------------ SPF


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("spf-pass.test", "pass"),
        ("spf-fail.test", "fail"),
        ("spf-soft.test", "softfail"),
        ("spf-none.test", "none"),
        ("nowhere.test", "none"),
        ("spf-broken.test", "temperror"),
    ],
)
def test_spf_result_of_mail_from_is_recorded(mx: SmtpServer, domain: str, expected: str) -> None:
    marker = token()
    send(mx, f"someone@{domain}", message(marker, f"someone@{domain}"))
    spf = result_of(mx, marker, "spf")
    assert spf == f"spf={expected} smtp.mailfrom=someone@{domain}"


def test_authentication_results_sits_above_our_received(mx: SmtpServer) -> None:
    marker = token()
    send(mx, "a@spf-pass.test", message(marker, "a@spf-pass.test"))
    names = [name.lower() for name, _value in stored(mx, marker).items()]
    assert names[:3] == ["return-path", "authentication-results", "received"]


# ------------------------------------------------------------------ DKIM


def test_dkim_signature_that_verifies_passes(mx: SmtpServer, key_pem: bytes) -> None:
    marker = token()
    send(mx, "news@signed.test", signed(marker, "news@signed.test", key_pem))
    dkim_result = result_of(mx, marker, "dkim")
    assert dkim_result == f"dkim=pass header.d=signed.test header.s={SELECTOR}"


def test_dkim_fails_when_the_body_changed_after_signing(mx: SmtpServer, key_pem: bytes) -> None:
    marker = token()
    data = signed(marker, "news@signed.test", key_pem).replace(b"Hello.", b"Hellp.")
    send(mx, "news@signed.test", data)
    assert result_of(mx, marker, "dkim") == (f"dkim=fail header.d=signed.test header.s={SELECTOR}")


def test_unsigned_message_is_dkim_none(mx: SmtpServer) -> None:
    marker = token()
    send(mx, "a@spf-pass.test", message(marker, "a@spf-pass.test"))
    assert result_of(mx, marker, "dkim") == "dkim=none"


def test_dkim_key_missing_from_dns_is_permerror(mx: SmtpServer, key_pem: bytes) -> None:
    marker = token()
    data = signed(marker, "a@spf-pass.test", key_pem, domain="spf-pass.test")
    send(mx, "a@spf-pass.test", data)
    assert result_of(mx, marker, "dkim") == (
        f"dkim=permerror header.d=spf-pass.test header.s={SELECTOR}"
    )


# ------------------------------------------------------------------ DMARC


def test_dmarc_passes_with_aligned_dkim_and_spf(mx: SmtpServer, key_pem: bytes) -> None:
    marker = token()
    send(mx, "news@signed.test", signed(marker, "news@signed.test", key_pem))
    assert result_of(mx, marker, "spf") == "spf=pass smtp.mailfrom=news@signed.test"
    assert result_of(mx, marker, "dmarc") == (
        "dmarc=pass header.from=signed.test policy.dmarc=reject"
    )


def test_dmarc_passes_on_aligned_dkim_alone(mx: SmtpServer, key_pem: bytes) -> None:
    """A forwarder: SPF of its own (unaligned) domain, the author's signature intact."""
    marker = token()
    send(mx, "fwd@spf-pass.test", signed(marker, "news@signed.test", key_pem))
    assert result_of(mx, marker, "dmarc").startswith("dmarc=pass header.from=signed.test")


def test_dmarc_fail_is_recorded_and_accepted_by_default(mx: SmtpServer) -> None:
    marker = token()
    # SPF passes, but for the envelope domain, not for the From domain.
    send(mx, "x@spf-pass.test", message(marker, "Bank <service@bank.test>"))
    assert result_of(mx, marker, "spf") == "spf=pass smtp.mailfrom=x@spf-pass.test"
    assert result_of(mx, marker, "dmarc") == (
        "dmarc=fail header.from=bank.test policy.dmarc=reject"
    )


def test_dmarc_none_when_the_from_domain_publishes_nothing(mx: SmtpServer) -> None:
    marker = token()
    send(mx, "x@spf-fail.test", message(marker, "x@spf-fail.test"))
    assert result_of(mx, marker, "dmarc") == "dmarc=none header.from=spf-fail.test"


def test_dmarc_reject_refuses_failing_mail_and_stores_nothing(strict: SmtpServer) -> None:
    marker = token()
    with connect(strict.ports["smtp"]) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail("x@spf-pass.test", [ALICE], message(marker, "service@bank.test"))
    assert reply(refused.value.smtp_code, refused.value.smtp_error) == (replies.R550_DMARC_REJECTED)
    assert with_marker(strict.store, ALICE, marker) == []


def test_dmarc_reject_accepts_mail_that_passes(strict: SmtpServer, key_pem: bytes) -> None:
    marker = token()
    send(strict, "news@signed.test", signed(marker, "news@signed.test", key_pem))
    assert result_of(strict, marker, "dmarc").startswith("dmarc=pass")


def test_dmarc_reject_honours_sp_for_subdomains(strict: SmtpServer) -> None:
    """quiet.test says p=reject but sp=none: its subdomain's failing mail is delivered."""
    marker = token()
    send(strict, "x@spf-pass.test", message(marker, "x@sub.quiet.test"))
    assert result_of(strict, marker, "dmarc") == (
        "dmarc=fail header.from=sub.quiet.test policy.dmarc=none"
    )


def test_dmarc_reject_never_refuses_on_a_dns_failure(strict: SmtpServer, dns: DnsServer) -> None:
    marker = token()
    dns.servfail.add("_dmarc.temp-bank.test.")
    send(strict, "x@spf-pass.test", message(marker, "x@temp-bank.test"))
    assert result_of(strict, marker, "dmarc") == "dmarc=temperror header.from=temp-bank.test"


# ------------------------------------------------------------------ forged fields, submission


def test_forged_authentication_results_with_our_id_is_removed(mx: SmtpServer) -> None:
    marker = token()
    forged = (
        f"Authentication-Results: {HOSTNAME.upper()};\r\n\tspf=pass smtp.mailfrom=ceo@bank.test;"
        "\r\n\tdmarc=pass header.from=bank.test\r\n"
        f"Authentication-Results: (looks official) {HOSTNAME}; dkim=pass header.d=bank.test\r\n"
        "Authentication-Results: mx.elsewhere.test; spf=pass smtp.mailfrom=a@b.test\r\n"
    )
    send(mx, "x@spf-fail.test", message(marker, "ceo@bank.test", extra=forged))
    fields = [
        " ".join(str(v).split()) for v in stored(mx, marker).get_all("Authentication-Results", [])
    ]
    assert len(fields) == 2, fields
    assert fields[0].startswith(f"{HOSTNAME}; spf=fail smtp.mailfrom=x@spf-fail.test;")
    assert "dmarc=fail header.from=bank.test" in fields[0]
    assert fields[1] == "mx.elsewhere.test; spf=pass smtp.mailfrom=a@b.test"


def test_submission_mail_gets_no_checks(
    tmp_path_factory: pytest.TempPathFactory, dns: DnsServer
) -> None:
    sender = "bob@spf-fail.test"  # hosted here, and its domain fails SPF for our IP
    with start_smtp_server(
        tmp_path_factory.mktemp("submission"),
        {ALICE: USERS[ALICE], sender: "bob-Pw-9a0c6e11"},
        extra_domains=["spf-fail.test"],
        relay={"nameservers": [dns.address]},
    ) as server:
        marker = token()
        before = len(dns.queries)
        with connect(
            server.ports["submission"],
            starttls=server.context,
            login=(sender, "bob-Pw-9a0c6e11"),
        ) as client:
            assert client.sendmail(sender, [ALICE], message(marker, sender)) == {}
        assert stored(server, marker).get_all("Authentication-Results") is None
        assert dns.queries[before:] == []


def test_checks_can_be_turned_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("off")
    with start_smtp_server(path, USERS, inbound={"check_authentication": False}) as server:
        marker = token()
        send(server, "x@spf-fail.test", message(marker, "x@spf-fail.test"))
        assert stored(server, marker).get_all("Authentication-Results") is None
