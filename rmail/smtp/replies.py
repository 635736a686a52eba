"""Every SMTP reply rmail sends, with its RFC 3463 enhanced status code, named once.

Tests refer to these names, never to retyped strings.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AIOSMTPD_REWRITES",
    "R221_BYE",
    "R235_AUTH_OK",
    "R250_OK",
    "R250_QUEUED",
    "R250_RECIPIENT_OK",
    "R250_SENDER_OK",
    "R421_SHUTTING_DOWN",
    "R421_TOO_MANY_CONNECTIONS",
    "R421_TOO_MANY_ERRORS",
    "R421_TOO_MANY_MESSAGES",
    "R451_LOCAL_ERROR",
    "R452_TOO_MANY_RECIPIENTS",
    "R454_AUTH_LOCKED",
    "R500_LINE_TOO_LONG",
    "R501_SYNTAX",
    "R503_AUTH_NOT_HERE",
    "R535_AUTH_FAILED",
    "R550_DMARC_REJECTED",
    "R550_MAILBOX_DISABLED",
    "R550_MESSAGE_MALFORMED",
    "R550_NO_SUCH_USER",
    "R550_RELAY_DISABLED",
    "R552_MESSAGE_TOO_BIG",
    "R552_OVER_QUOTA",
    "R553_FROM_NOT_OWNED",
    "R553_SENDER_NOT_OWNED",
    "R554_NO_VALID_RECIPIENTS",
    "R554_RELAY_DENIED",
]

# 2xx
R250_OK: Final = "250 2.0.0 OK"
R250_SENDER_OK: Final = "250 2.1.0 Sender OK"
R250_RECIPIENT_OK: Final = "250 2.1.5 Recipient OK"
R250_QUEUED: Final = "250 2.0.0 OK: queued as {id}"
R235_AUTH_OK: Final = "235 2.7.0 Authentication successful"
R221_BYE: Final = "221 2.0.0 Bye"

# 4xx: try again later
R421_TOO_MANY_CONNECTIONS: Final = "421 4.7.0 {host} Too many connections, try again later"
R421_TOO_MANY_ERRORS: Final = "421 4.7.0 {host} Too many errors, closing connection"
R421_TOO_MANY_MESSAGES: Final = "421 4.7.0 {host} Too many messages in one connection"
R421_SHUTTING_DOWN: Final = "421 4.3.2 {host} Service shutting down"
R451_LOCAL_ERROR: Final = "451 4.3.0 Local error in processing, try again later"
R452_TOO_MANY_RECIPIENTS: Final = "452 4.5.3 Too many recipients"
R454_AUTH_LOCKED: Final = "454 4.7.0 Too many failed logins, try again later"

# 5xx: permanent
R500_LINE_TOO_LONG: Final = "500 5.5.2 Line too long"
R501_SYNTAX: Final = "501 5.5.4 Syntax error in parameters"
R503_AUTH_NOT_HERE: Final = "503 5.5.1 AUTH is not offered on this port; use submission"
R535_AUTH_FAILED: Final = "535 5.7.8 Authentication credentials invalid"
R550_NO_SUCH_USER: Final = "550 5.1.1 No such user here"
R550_MAILBOX_DISABLED: Final = "550 5.2.1 Mailbox disabled"
R550_RELAY_DISABLED: Final = "550 5.7.1 Relaying to remote domains is disabled here"
# RFC 7489 §6.6.2 / §7.3: 5.7.1 for a DMARC policy rejection.
R550_DMARC_REJECTED: Final = "550 5.7.1 Message rejected by the sender domain's DMARC policy"
R552_MESSAGE_TOO_BIG: Final = "552 5.3.4 Message size exceeds fixed maximum message size"
R552_OVER_QUOTA: Final = "552 5.2.2 Mailbox full"
R553_SENDER_NOT_OWNED: Final = "553 5.7.1 Sender address not owned by the authenticated user"
R553_FROM_NOT_OWNED: Final = "553 5.7.1 From header not owned by the authenticated user"
R554_RELAY_DENIED: Final = "554 5.7.1 Relay access denied"
R554_NO_VALID_RECIPIENTS: Final = "554 5.5.1 No valid recipients"
R550_MESSAGE_MALFORMED: Final = "550 5.6.0 Message headers are malformed"

# aiosmtpd's own fixed replies (without enhanced codes) -> ours (RFC 2034 wants one on
# every 2xx/4xx/5xx reply once ENHANCEDSTATUSCODES is advertised).
AIOSMTPD_REWRITES: Final[dict[str, str]] = {
    "250 OK": R250_OK,
    "221 Bye": R221_BYE,
    "552 Error: message size exceeds fixed maximum message size": R552_MESSAGE_TOO_BIG,
    "552 Error: Too much mail data": R552_MESSAGE_TOO_BIG,
    "500 Line too long (see RFC5321 4.5.3.1.6)": R500_LINE_TOO_LONG,
    "500 Command line too long": "500 5.5.2 Command line too long",
    "500 Error: bad syntax": "500 5.5.2 Syntax error",
    "500 Error: strict ASCII mode": "500 5.6.7 Non-ASCII without SMTPUTF8",
    "503 Error: need MAIL command": "503 5.5.1 Need MAIL command first",
    "503 Error: need RCPT command": "503 5.5.1 Need RCPT command first",
    "503 Error: nested MAIL command": "503 5.5.1 Sender already given",
    "503 Error: send HELO first": "503 5.5.1 Send HELO/EHLO first",
    "503 Already authenticated": "503 5.5.1 Already authenticated",
    "530 5.7.0 Authentication required": "530 5.7.0 Authentication required",
    "530 Must issue a STARTTLS command first": "530 5.7.0 Must issue a STARTTLS command first",
    "554 Command refused due to lack of security": "554 5.7.0 TLS negotiation failed",
    "502 EXPN not implemented": "502 5.5.1 EXPN not implemented",
    "252 Cannot VRFY user, but will accept message and attempt delivery": (
        "252 2.5.2 Cannot VRFY user, but will accept message and attempt delivery"
    ),
    "555 MAIL FROM parameters not recognized or not implemented": (
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented"
    ),
    "555 RCPT TO parameters not recognized or not implemented": (
        "555 5.5.4 RCPT TO parameters not recognized or not implemented"
    ),
}
