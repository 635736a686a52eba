"""``rmail serve --demo``: domain ``example.test``, users alice and bob, and sample mail.

Everything goes through the public store and delivery API, exactly as a script would do it.
Passwords are random on the first run and kept in ``secrets/demo.json`` (mode 0600) so that a
restarted demo keeps working with the credentials it printed.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from rmail.delivery import Delivery
from rmail.errors import NotFound
from rmail.store import Store
from rmail.store.fsio import atomic_write
from rmail.store.keys import secrets_dir

__all__ = ["DEMO_DOMAIN", "setup_demo"]

DEMO_DOMAIN = "example.test"
DEMO_USERS = ("alice", "bob")


def setup_demo(store: Store, delivery: Delivery) -> dict[str, str]:
    """Create the demo accounts and mail if missing; return address -> password."""
    path = secrets_dir(store.root) / "demo.json"
    try:
        creds: dict[str, str] = json.loads(path.read_text())
    except FileNotFoundError:
        creds = {}
    if not store.accounts.has_domain(DEMO_DOMAIN):
        store.accounts.add_domain(DEMO_DOMAIN)
    for user in DEMO_USERS:
        address = f"{user}@{DEMO_DOMAIN}"
        password = creds.get(address) or secrets.token_urlsafe(9)
        try:
            store.accounts.get_user(address)
            if address not in creds:  # made by hand earlier: take it over with a known password
                store.accounts.set_password(address, password)
        except NotFound:
            store.create_user(address, password, admin=user == "alice")
        creds[address] = password
    atomic_write(path, json.dumps(creds, indent=1).encode())
    alice = store.mailbox(f"alice@{DEMO_DOMAIN}").folder("INBOX")
    if len(alice.refresh()) == 0:
        for message in sample_messages():
            delivery.deliver_sync(message.as_bytes(), [f"alice@{DEMO_DOMAIN}"], "bob@example.test")
    return creds


def _base(subject: str, when: datetime) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Bob Example <bob@example.test>"
    msg["To"] = "Alice Example <alice@example.test>"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(when)
    msg["Message-ID"] = make_msgid(domain=DEMO_DOMAIN)
    return msg


def sample_messages() -> list[EmailMessage]:
    """Plain text, HTML with a text part, an attachment, and a calendar invitation."""
    now = datetime.now(UTC).replace(microsecond=0)
    plain = _base("Welcome to rmail", now - timedelta(hours=3))
    plain.set_content(
        "Hi Alice,\n\nthis is a plain text message from the rmail demo.\n"
        "Point an IMAP client at this server and log in as alice@example.test.\n\nBob\n"
    )
    html = _base("Quarterly newsletter", now - timedelta(hours=2))
    html.set_content("The newsletter, in plain text for clients that prefer it.\n")
    html.add_alternative(
        "<html><body><h1>Newsletter</h1><p>Now with <b>HTML</b> and a "
        '<a href="https://example.test/">link</a>.</p></body></html>\n',
        subtype="html",
    )
    attached = _base("The report you asked for", now - timedelta(hours=1))
    attached.set_content("The report is attached.\n")
    attached.add_attachment(
        b"quarter,revenue\nQ1,100\nQ2,120\n",
        maintype="text",
        subtype="csv",
        filename="report.csv",
    )
    start = (now + timedelta(days=2)).replace(hour=10, minute=0, second=0)
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    ics = "\r\n".join(
        [
            "BEGIN:VCALENDAR",
            "VERSION:2.0",
            "PRODID:-//rmail//demo//EN",
            "METHOD:REQUEST",
            "BEGIN:VEVENT",
            f"UID:{secrets.token_hex(8)}@{DEMO_DOMAIN}",
            f"DTSTAMP:{stamp}",
            f"DTSTART:{start.strftime('%Y%m%dT%H%M%SZ')}",
            f"DTEND:{(start + timedelta(hours=1)).strftime('%Y%m%dT%H%M%SZ')}",
            "SUMMARY:Project kick-off",
            "ORGANIZER;CN=Bob:mailto:bob@example.test",
            "ATTENDEE;CN=Alice;RSVP=TRUE;PARTSTAT=NEEDS-ACTION:mailto:alice@example.test",
            "END:VEVENT",
            "END:VCALENDAR",
            "",
        ]
    )
    invite = _base("Invitation: Project kick-off", now)
    invite.set_content("You are invited to the project kick-off.\n")
    invite.add_attachment(
        ics.encode(),
        maintype="text",
        subtype="calendar",
        params={"method": "REQUEST"},
        filename="invite.ics",
    )
    return [plain, html, attached, invite]
