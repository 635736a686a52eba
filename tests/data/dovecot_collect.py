"""Regenerate ``dovecot_expected.json``: what Dovecot answers to FETCH for each fixture.

Run by hand, as root, where Dovecot is installed (``apt-get install dovecot-imapd``)::

    python tests/data/dovecot_collect.py

It starts a private Dovecot on 127.0.0.1 (own config and maildir in a temporary directory,
static passdb), APPENDs every ``*.eml`` here to a mailbox of its own, FETCHes each item of
``ITEMS`` in a separate command (so one NO does not hide the others), stores the tagged
status and the FETCH item text, and stops Dovecot. The tests read the JSON only; they never
need Dovecot. Strings in the JSON are the raw octets decoded as Latin-1.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

DATA = pathlib.Path(__file__).resolve().parent
OUTPUT = DATA / "dovecot_expected.json"

_SECTIONS = [
    "", "HEADER", "TEXT", "HEADER.FIELDS (FROM SUBJECT)",
    "HEADER.FIELDS.NOT (FROM SUBJECT RECEIVED)", "HEADER.FIELDS (X-NOPE)", "1", "1.MIME",
    "1.HEADER", "1.TEXT", "2", "2.MIME", "2.HEADER", "2.TEXT", "2.HEADER.FIELDS (SUBJECT)", "3",
    "3.MIME", "4", "1.1", "1.2", "1.1.MIME", "1.2.MIME", "2.1", "2.2", "2.1.MIME", "2.2.MIME",
    "1.2.1", "1.2.2", "1.2.2.MIME", "2.1.1", "9",
]  # fmt: skip
ITEMS = [
    "ENVELOPE", "BODY", "BODYSTRUCTURE", "RFC822.HEADER", "RFC822.TEXT", "RFC822.SIZE",
    "BODY.PEEK[]<0.20>", "BODY.PEEK[TEXT]<5.10>", "BODY.PEEK[]<100000.5>", "BODY.PEEK[1]<0.0>",
    *(f"BODY.PEEK[{s}]" for s in _SECTIONS),
    *(f"BINARY.PEEK[{s}]" for s in ["", "1", "2", "3", "1.1", "1.2", "2.1", "TEXT"]),
    *(f"BINARY.SIZE[{s}]" for s in ["", "1", "2", "3", "1.1", "2.1"]),
    "BINARY.PEEK[1]<2.5>",
]  # fmt: skip

_CONFIG = """\
protocols = imap
base_dir = {root}/run
state_dir = {root}/state
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = {root}/dovecot.log
mail_location = maildir:{root}/mail/%u
first_valid_uid = 1
passdb {{
  driver = static
  args = password=pass
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
"""


class _Client:
    """A minimal IMAP client that keeps responses as raw bytes, literals inlined."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.buf = b""
        self.count = 0
        self._line()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("dovecot closed the connection")
        self.buf += data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        end = self.buf.index(b"\r\n") + 2
        line, self.buf = self.buf[:end], self.buf[end:]
        return line

    def _octets(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _response(self) -> bytes:
        out = b""
        while True:
            line = self._line()
            out += line
            match = re.search(rb"~?\{(\d+)\}\r\n$", line)
            if match is None:
                return out
            out += self._octets(int(match.group(1)))

    def command(self, text: bytes, literal: bytes | None = None) -> tuple[bytes, list[bytes]]:
        self.count += 1
        tag = b"a%d" % self.count
        if literal is None:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text + b" {%d}\r\n" % len(literal))
            reply = self._line()
            if not reply.startswith(b"+"):
                raise RuntimeError(f"no continuation for APPEND: {reply!r}")
            self.sock.sendall(literal + b"\r\n")
        untagged: list[bytes] = []
        while True:
            response = self._response()
            if response.startswith(tag + b" "):
                return response, untagged
            untagged.append(response)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def collect(port: int) -> dict[str, object]:
    client = _Client(port)
    status, _ = client.command(b"LOGIN test pass")
    if b" OK " not in status:
        raise RuntimeError(status.decode())
    result: dict[str, object] = {
        "_comment": "Dovecot FETCH output per fixture, from tests/data/dovecot_collect.py. "
        "Each item maps to [tagged status text, FETCH item text or null]; "
        "strings are the raw octets decoded as latin-1."
    }
    for path in sorted(DATA.glob("*.eml")):
        mailbox = path.stem.encode()
        client.command(b"CREATE " + mailbox)
        client.command(b"APPEND " + mailbox + b' "01-Feb-2024 12:00:00 +0000"', path.read_bytes())
        client.command(b"EXAMINE " + mailbox)
        items: dict[str, list[str | None]] = {}
        for item in ITEMS:
            status, untagged = client.command(b"FETCH 1 (" + item.encode() + b")")
            data = None
            for response in untagged:
                if response.startswith(b"* 1 FETCH (") and response.endswith(b")\r\n"):
                    data = response[len(b"* 1 FETCH (") : -3].decode("latin-1")
            text = status.split(b" ", 1)[1].rstrip(b"\r\n").decode("latin-1")
            items[item] = [re.sub(r" \(\d+\.\d+ \+ \d+\.\d+ secs\)", "", text), data]
        result[path.name] = items
    client.command(b"LOGOUT")
    return result


def main() -> int:
    dovecot = shutil.which("dovecot")
    if dovecot is None:
        print("dovecot is not installed", file=sys.stderr)
        return 1
    version = subprocess.run(
        [dovecot, "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="rmail-dovecot-") as tmp:
        root = pathlib.Path(tmp)
        root.chmod(0o755)  # the mail processes run as the dovecot user
        for sub in ("run", "state", "mail"):
            (root / sub).mkdir()
        shutil.chown(root / "mail", "dovecot", "dovecot")
        port = _free_port()
        config = root / "dovecot.conf"
        config.write_text(_CONFIG.format(root=root, port=port))
        server = subprocess.Popen([dovecot, "-F", "-c", str(config)])
        try:
            _wait_for_port(port)
            result = collect(port)
        finally:
            server.terminate()
            server.wait(timeout=10)
    result["_dovecot_version"] = version
    OUTPUT.write_text(json.dumps(result, indent=1, ensure_ascii=True, sort_keys=True) + "\n")
    print(f"wrote {OUTPUT} ({len(result) - 2} fixtures, Dovecot {version})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
