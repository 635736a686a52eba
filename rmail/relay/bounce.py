"""Delivery status notifications (RFC 3464): the bounce a sender gets for mail we gave up on.

A ``multipart/report; report-type=delivery-status`` message with three parts: a short
explanation for people, the ``message/delivery-status`` fields for programs (one block per
failed recipient), and the original message's header (``text/rfc822-headers``, RFC 6522),
so the sender can tell which message it was without the body being sent back.
"""

from __future__ import annotations

import email.utils
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FailedRecipient", "build_bounce", "wants_bounce"]

# Senders that never get a bounce: the null sender (RFC 5321 §4.5.5) and, as the original
# rmail did, mailer-daemon addresses that are a bounce's origin by convention.
_NO_BOUNCE_LOCALS = frozenset({"mailer-daemon"})


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    address: str
    status: str  # RFC 3463 code, 5.x.x
    diagnostic: str  # the remote reply or our reason
    remote_mta: str | None = None


def wants_bounce(mail_from: str) -> bool:
    """Whether a failure of mail from ``mail_from`` is reported back to it."""
    if not mail_from or "@" not in mail_from:
        return False
    return mail_from.rpartition("@")[0].lower() not in _NO_BOUNCE_LOCALS


def build_bounce(
    *,
    hostname: str,
    mail_from: str,
    original: bytes,
    failed: Sequence[FailedRecipient],
    arrival: float,
) -> bytes:
    """The DSN bytes (CRLF line ends), addressed to ``mail_from``."""
    boundary = f"rmail-dsn-{secrets.token_hex(12)}"
    now = email.utils.formatdate(localtime=False)
    names = ", ".join(f.address for f in failed)
    human = [
        f"This is the mail system at {hostname}.",
        "",
        "Your message could not be delivered to one or more recipients. It is attached",
        "below (its header only). The reasons follow.",
        "",
    ]
    for f in failed:
        where = f" (from {f.remote_mta})" if f.remote_mta else ""
        human.append(f"<{f.address}>: {f.diagnostic}{where}")
    status = [
        f"Reporting-MTA: dns; {hostname}",
        f"Arrival-Date: {email.utils.formatdate(arrival, localtime=False)}",
    ]
    for f in failed:
        status += [
            "",
            f"Final-Recipient: {_address_type(f.address)}; {f.address}",
            "Action: failed",
            f"Status: {_failed_status(f.status)}",
        ]
        if f.remote_mta:
            status.append(f"Remote-MTA: dns; {f.remote_mta}")
            status.append(f"Diagnostic-Code: smtp; {_one_line(f.diagnostic)}")
        else:
            status.append(f"Diagnostic-Code: X-rmail; {_one_line(f.diagnostic)}")
        status.append(f"Last-Attempt-Date: {now}")
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{mail_from}>",
        f"Subject: Undelivered Mail Returned to Sender ({_one_line(names)[:200]})",
        f"Date: {now}",
        f"Message-ID: <{int(time.time())}.{secrets.token_hex(8)}@{hostname}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-formatted delivery status notification.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        *human,
        "",
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        *status,
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    text = "\r\n".join(head).encode("utf-8", "replace") + b"\r\n"
    return text + _header_block(original) + f"\r\n--{boundary}--\r\n".encode()


def _header_block(message: bytes) -> bytes:
    """The original's header, CRLF line ends, ending with one CRLF."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = message.find(sep)
        if end >= 0:
            message = message[:end]
            break
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    # A line that looks like our boundary cannot occur: the boundary is random.
    return b"".join(line + b"\r\n" for line in lines)


def _address_type(address: str) -> str:
    return "rfc822" if address.isascii() else "utf-8"  # RFC 6533 for non-ASCII addresses


def _failed_status(code: str) -> str:
    """A failed DSN's Status is 5.x.x (RFC 3464 §2.3.4); a temporary code that expired
    keeps its detail (4.4.1 → 5.4.1)."""
    parts = code.split(".")
    if len(parts) == 3 and parts[0] in "45" and parts[0]:
        return f"5.{parts[1]}.{parts[2]}"
    return "5.0.0"


def _one_line(text: str) -> str:
    return " ".join(text.split())
