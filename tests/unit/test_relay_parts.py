"""The relay's pure parts: the retry schedule, DSN building, DKIM's choice of domain."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import dkim
import pytest

from rmail.relay.bounce import FailedRecipient, build_bounce, wants_bounce
from rmail.relay.dkim import DkimSigner, dns_record_lines
from rmail.relay.service import retry_delay
from rmail.relay.transport import _enhanced


def test_the_retry_schedule_doubles_up_to_its_cap() -> None:
    delays = [retry_delay(n, 300, 14400) for n in range(1, 9)]
    assert delays == [300, 600, 1200, 2400, 4800, 9600, 14400, 14400]
    assert retry_delay(10_000, 300, 14400) == 14400


@pytest.mark.parametrize(
    ("sender", "bounce"),
    [
        ("alice@example.test", True),
        ("", False),
        ("MAILER-DAEMON@example.test", False),
        ("mailer-daemon@remote.test", False),
        ("no-at-sign", False),
    ],
)
def test_who_gets_a_bounce(sender: str, bounce: bool) -> None:
    assert wants_bounce(sender) is bounce


def test_a_bounce_is_a_well_formed_delivery_status_report() -> None:
    original = b"From: a@example.test\r\nSubject: Hi\r\n\r\nsecret body\r\n"
    raw = build_bounce(
        hostname="mail.example.test",
        mail_from="a@example.test",
        original=original,
        failed=[
            FailedRecipient("x@remote.test", "5.1.1", "550 5.1.1 unknown", "mx.remote.test"),
            FailedRecipient("y@remote.test", "4.4.7", "gave up: connection refused"),
        ],
        arrival=0.0,
    )
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"].addresses[0].addr_spec == "a@example.test"
    assert message["Auto-Submitted"] == "auto-replied"
    human, status, headers = message.iter_parts()
    assert "could not be delivered" in human.get_content()
    assert status.get_content_type() == "message/delivery-status"
    text = status.as_bytes().decode()
    assert "Reporting-MTA: dns; mail.example.test" in text
    assert "Status: 5.1.1" in text and "Remote-MTA: dns; mx.remote.test" in text
    assert "Status: 5.4.7" in text  # an expired temporary failure is reported as failed
    assert "Diagnostic-Code: X-rmail; gave up: connection refused" in text
    assert b"secret body" not in raw  # only the header goes back
    assert "Subject: Hi" in headers.as_bytes().decode()
    assert all(line.endswith(b"\r") or not line for line in raw.split(b"\n")[:-1])


@pytest.mark.parametrize(
    ("code", "text", "enhanced"),
    [
        (550, "5.1.1 No such user", "5.1.1"),
        (451, "4.3.0 Try later", "4.3.0"),
        (550, "No such user", "5.0.0"),
        (550, "4.1.1 mismatched class", "5.0.0"),
        (250, "2.0.0 Ok", "2.0.0"),
    ],
)
def test_enhanced_status_codes_come_from_the_reply(code: int, text: str, enhanced: str) -> None:
    assert _enhanced(code, text) == enhanced


def test_dkim_signs_with_the_hosted_from_domain_and_verifies(tmp_path: Path) -> None:
    signer = DkimSigner(tmp_path, "sel", lambda d: d in {"example.test", "other.test"})
    message = b"From: A <a@example.test>\r\nTo: b@remote.test\r\nSubject: s\r\n\r\nbody\r\n"
    assert signer.signing_domain(message, "bounce@other.test") == "example.test"
    foreign = message.replace(b"example.test", b"remote.test", 1)
    assert signer.signing_domain(foreign, "bounce@other.test") == "other.test"
    assert signer.signing_domain(foreign, "x@remote.test") is None
    assert signer.sign(foreign, "x@remote.test") == foreign
    signed = signer.sign(message, "a@example.test")
    assert signed.startswith(b"DKIM-Signature:") and b"d=example.test" in signed
    (line,) = dns_record_lines(tmp_path, "sel", "example.test")
    value = "".join(line.split('"')[1::2]).encode()
    records = {b"sel._domainkey.example.test.": value}
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: records.get(name))
    tampered = signed.replace(b"body", b"BODY")
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: records.get(name))
