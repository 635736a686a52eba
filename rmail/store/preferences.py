"""Per-user webmail preferences: ``domains/{domain}/users/{user}/webmail.json``.

Fields: ``display_name`` (one line, at most 200 characters; shown in From) and
``signature`` (at most 4000 characters; appended to new messages after the ``-- ``
separator line of RFC 3676 §4.3). A missing or unreadable file means the defaults. Writes
are atomic (:func:`rmail.store.fsio.atomic_write_json`); the store knows nothing of HTTP.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from rmail.errors import InvalidInput
from rmail.store.accounts import Accounts
from rmail.store.fsio import atomic_write_json, read_json

__all__ = [
    "Preferences",
    "load_preferences",
    "preferences_of",
    "save_preferences",
]

logger = logging.getLogger(__name__)

FILE: Final = "webmail.json"
MAX_DISPLAY_NAME: Final = 200
MAX_SIGNATURE: Final = 4000
# RFC 3676 §4.3: the signature separator is "-- " alone on a line.
SEPARATOR: Final = "-- "


@dataclass(frozen=True, slots=True)
class Preferences:
    display_name: str = ""
    signature: str = ""

    def signed(self, body: str) -> str:
        """``body`` with the signature appended (unchanged when there is none)."""
        if not self.signature.strip():
            return body
        return f"{body}\n\n{SEPARATOR}\n{self.signature}"


def _clean(display_name: str, signature: str) -> Preferences:
    name = " ".join(display_name.split())
    if len(name) > MAX_DISPLAY_NAME:
        raise InvalidInput(f"the display name has at most {MAX_DISPLAY_NAME} characters")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in name):
        raise InvalidInput("the display name may not hold control characters")
    text = signature.replace("\r\n", "\n").replace("\r", "\n").rstrip()
    if len(text) > MAX_SIGNATURE:
        raise InvalidInput(f"the signature has at most {MAX_SIGNATURE} characters")
    return Preferences(name, text)


def load_preferences(user_dir: Path) -> Preferences:
    """The preferences kept in ``user_dir`` (the defaults when there are none)."""
    try:
        data = read_json(user_dir / FILE)
    except FileNotFoundError:
        return Preferences()
    except (OSError, ValueError) as exc:
        logger.warning("webmail preferences unreadable path=%s error=%s", user_dir / FILE, exc)
        return Preferences()
    if not isinstance(data, dict):
        return Preferences()
    try:
        return _clean(str(data.get("display_name", "")), str(data.get("signature", "")))
    except InvalidInput:
        return Preferences()


def save_preferences(
    user_dir: Path, display_name: str, signature: str, *, fsync: bool = True
) -> Preferences:
    """Check and store new preferences; returns them as stored.

    Raises:
        InvalidInput: a field is too long or holds control characters.
        TemporaryFailure: the disk refused the write.
    """
    prefs = _clean(display_name, signature)
    data = {"display_name": prefs.display_name, "signature": prefs.signature}
    atomic_write_json(user_dir / FILE, data, fsync=fsync)
    return prefs


def preferences_of(accounts: Accounts, address: str) -> Preferences:
    """The preferences of a user (blocking: call it off the event loop).

    Raises:
        NotFound: no such user.
    """
    return load_preferences(accounts.user_dir(address))
