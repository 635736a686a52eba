"""Modified UTF-7, the IMAP mailbox-name encoding (RFC 3501 §5.1.3).

Printable US-ASCII (0x20-0x7E) stands for itself, except ``&``, written ``&-``. Any other run
of characters is written ``&`` + modified BASE64 of its UTF-16BE form + ``-``, where modified
BASE64 uses ``,`` instead of ``/`` and drops the ``=`` padding.

``decode`` is strict: it accepts only the canonical form that ``encode`` produces, so
``encode(decode(s)) == s`` for every ``s`` it accepts, and raises ``ValueError`` otherwise
(``&`` not closed, a character outside printable ASCII, non-zero or superfluous padding bits,
an encoded printable ASCII character, two encoded runs back to back, invalid UTF-16).
"""

from __future__ import annotations

import binascii
from typing import Final

__all__ = ["decode", "encode"]

# RFC 3501 §5.1.3: printable US-ASCII except "&" represents itself.
_FIRST_PRINTABLE: Final = 0x20
_LAST_PRINTABLE: Final = 0x7E
# Modified BASE64: "," instead of "/".
_B64_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"
_B64_VALUE: Final = {char: value for value, char in enumerate(_B64_ALPHABET)}


def _is_direct(char: str) -> bool:
    return _FIRST_PRINTABLE <= ord(char) <= _LAST_PRINTABLE


def _encode_run(run: str) -> str:
    # UTF-16BE, standard base64 without padding, "/" -> "," (RFC 3501 §5.1.3).
    raw = run.encode("utf-16-be")
    b64 = binascii.b2a_base64(raw, newline=False).decode("ascii").rstrip("=")
    return "&" + b64.replace("/", ",") + "-"


def encode(name: str) -> str:
    """Encode a mailbox name to modified UTF-7.

    Raises ``ValueError`` (``UnicodeEncodeError``) for a lone surrogate, which has no UTF-16
    form.
    """
    if name.isascii() and "&" not in name and name.isprintable():
        return name  # the common case: nothing to do
    out: list[str] = []
    run_start = -1
    for index, char in enumerate(name):
        if _is_direct(char):
            if run_start >= 0:
                out.append(_encode_run(name[run_start:index]))
                run_start = -1
            out.append("&-" if char == "&" else char)
        elif run_start < 0:
            run_start = index
    if run_start >= 0:
        out.append(_encode_run(name[run_start:]))
    return "".join(out)


def _decode_run(b64: str, offset: int) -> str:
    if not b64:
        raise ValueError(f"empty base64 run at offset {offset}")
    if not all(char in _B64_VALUE for char in b64):
        raise ValueError(f"invalid modified base64 character at offset {offset}")
    total_bits = len(b64) * 6
    n_bytes = total_bits // 8
    # Canonical: no superfluous character, whole UTF-16 code units, zero padding bits.
    if n_bytes % 2 or (n_bytes * 8 + 5) // 6 != len(b64):
        raise ValueError(f"non-canonical base64 length at offset {offset}")
    std = b64.replace(",", "/")
    std += "=" * (-len(std) % 4)
    try:
        raw = binascii.a2b_base64(std, strict_mode=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid modified base64 at offset {offset}") from exc
    pad_bits = total_bits - n_bytes * 8
    last_value = _B64_VALUE[b64[-1]]
    if pad_bits and last_value & ((1 << pad_bits) - 1):
        raise ValueError(f"non-zero padding bits at offset {offset}")
    try:
        text = raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-16 in base64 run at offset {offset}") from exc
    if any(_is_direct(char) for char in text):
        raise ValueError(f"printable ASCII encoded in base64 at offset {offset}")
    return text


def decode(name: str) -> str:
    """Decode a modified UTF-7 mailbox name; ``ValueError`` unless it is canonical."""
    if "&" not in name:
        if name.isascii() and name.isprintable():
            return name
        raise ValueError("mailbox name has a character outside printable US-ASCII")
    out: list[str] = []
    index = 0
    length = len(name)
    last_was_run = False
    while index < length:
        char = name[index]
        if not _is_direct(char):
            raise ValueError(f"character outside printable US-ASCII at offset {index}")
        if char != "&":
            out.append(char)
            index += 1
            last_was_run = False
            continue
        end = name.find("-", index + 1)
        if end < 0:
            raise ValueError(f"'&' at offset {index} is not closed by '-'")
        if end == index + 1:
            out.append("&")
            last_was_run = False
        else:
            if last_was_run:
                raise ValueError(f"two base64 runs back to back at offset {index}")
            out.append(_decode_run(name[index + 1 : end], index + 1))
            last_was_run = True
        index = end + 1
    return "".join(out)
