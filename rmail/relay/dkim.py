"""DKIM signing of outbound mail (RFC 6376) with dkimpy.

The signing domain is the domain of the ``From:`` header when it is hosted here (that is
the domain DMARC aligns against), else the envelope sender's when that is hosted, else the
message goes unsigned. Each hosted domain has its own RSA key in
``secrets/dkim/{domain}.key``, made on first use; ``rmail dkim show DOMAIN`` prints the TXT
record to publish at ``{selector}._domainkey.{domain}``.
"""

from __future__ import annotations

import email.utils
import logging
from collections.abc import Callable
from pathlib import Path

import dkim

from rmail.store.keys import dkim_public_record, ensure_dkim_key

__all__ = ["DkimSigner", "dns_record_lines"]

logger = logging.getLogger(__name__)

# Headers signed when present (RFC 6376 §5.4.1's list of those that matter to a reader),
# and From twice over so that a second From cannot be added after signing (§8.15).
SIGNED_HEADERS = (
    b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"reply-to",
    b"in-reply-to", b"references", b"mime-version", b"content-type",
    b"content-transfer-encoding", b"list-unsubscribe", b"list-unsubscribe-post",
)  # fmt: skip


class DkimSigner:
    """Signs messages for hosted domains; blocking (RSA), so callers use a thread."""

    def __init__(self, root: Path, selector: str, is_hosted: Callable[[str], bool]) -> None:
        self.root = root
        self.selector = selector
        self.is_hosted = is_hosted
        self._keys: dict[str, bytes] = {}

    def signing_domain(self, message: bytes, mail_from: str) -> str | None:
        """The hosted domain that signs ``message``, or None."""
        for candidate in (_from_domain(message), mail_from.rpartition("@")[2].lower()):
            if candidate and self.is_hosted(candidate):
                return candidate
        return None

    def key(self, domain: str) -> bytes:
        key = self._keys.get(domain)
        if key is None:
            key = self._keys[domain] = ensure_dkim_key(self.root, domain)
        return key

    def sign(self, message: bytes, mail_from: str) -> bytes:
        """``message`` with a DKIM-Signature header first, or unchanged when no domain here
        signs it or dkimpy refuses it (a message too malformed to sign is still sent)."""
        domain = self.signing_domain(message, mail_from)
        if domain is None:
            return message
        present = {name.lower() for name in _header_names(message)}
        include = [h for h in SIGNED_HEADERS if h in present] + [b"from"]
        try:
            signature = dkim.sign(
                message,
                self.selector.encode(),
                domain.encode(),
                self.key(domain),
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=include,
                linesep=b"\r\n",
            )
        except dkim.DKIMException as exc:
            logger.warning("not DKIM-signed domain=%s reason=%s", domain, exc)
            return message
        return bytes(signature) + message


def dns_record_lines(root: Path, selector: str, domain: str) -> list[str]:
    """What ``rmail dkim show`` prints: the record in zone-file form, split into strings of
    at most 255 bytes as a TXT record requires (RFC 1035 §3.3.14)."""
    value = dkim_public_record(ensure_dkim_key(root, domain))
    chunks = [value[i : i + 250] for i in range(0, len(value), 250)]
    quoted = " ".join(f'"{chunk}"' for chunk in chunks)
    return [f"{selector}._domainkey.{domain}. IN TXT ( {quoted} )"]


def _header_names(message: bytes) -> list[bytes]:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = message if end < 0 else message[:end]
    names = []
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t"):
            continue
        name, sep, _ = line.partition(b":")
        if sep:
            names.append(name.strip())
    return names


def _from_domain(message: bytes) -> str | None:
    end = message.find(b"\r\n\r\n")
    if end < 0:
        end = message.find(b"\n\n")
    head = (message if end < 0 else message[:end]).decode("utf-8", "replace")
    value: list[str] = []
    for line in head.splitlines():
        if value and line[:1] in (" ", "\t"):
            value.append(line)
            continue
        if value:
            break
        name, sep, rest = line.partition(":")
        if sep and name.strip().lower() == "from":
            value.append(rest)
    addresses = email.utils.getaddresses(["".join(value)]) if value else []
    if len(addresses) != 1 or "@" not in addresses[0][1]:
        return None
    return addresses[0][1].rpartition("@")[2].lower().rstrip(".")
