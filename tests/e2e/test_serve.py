"""``rmail serve`` as a real process: ports, TLS, secrets, signals, bad config, the demo.

Every test starts the server through the ``start_server``/``server`` fixtures (port 0, a
temporary data directory) and talks to it with real clients: aiohttp and ``ssl`` sockets.
"""

from __future__ import annotations

import asyncio
import datetime
import email
import email.policy
import ipaddress
import json
import os
import re
import signal
import ssl
import stat
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rmail.config import AuthConfig
from rmail.store import Store

if TYPE_CHECKING:
    from conftest import MakeConfig, RunningServer, StartServer

CHEAP = AuthConfig(argon2_time_cost=1, argon2_memory_kib=64)
EX_CONFIG = 78


# ------------------------------------------------------------------ helpers


def _client_context(*cafiles: Path) -> ssl.SSLContext:
    """A verifying client context that trusts exactly ``cafiles``."""
    context = ssl.create_default_context()
    for cafile in cafiles:
        context.load_verify_locations(cafile=str(cafile))
    return context


async def _health(url: str, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {}
        if context is not None:
            kwargs = {"ssl": context, "server_hostname": "localhost"}
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10), **kwargs) as resp:
            return resp.status, await resp.json()


async def _peer_certificate(port: int, context: ssl.SSLContext) -> bytes:
    """The DER certificate a new TLS connection to ``port`` is shown."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="localhost"),
        10,
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        assert isinstance(ssl_object, ssl.SSLObject)
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return der
    finally:
        writer.close()
        await writer.wait_closed()
        del reader


def _write_cert_pair(cert_path: Path, key_path: Path, common_name: str) -> bytes:
    """A self-signed localhost certificate at ``cert_path``; returns its DER bytes."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert.public_bytes(serialization.Encoding.DER)


def clean_env() -> dict[str, str]:
    """Our environment without ``RMAIL_*`` variables, for child processes."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RMAIL_")}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _serve_once(config_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``rmail serve`` expected to refuse to start (so it must exit on its own)."""
    return subprocess.run(
        [sys.executable, "-m", "rmail", "serve", "--config", str(config_path), *extra],
        cwd=config_path.parent,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# ------------------------------------------------------------------ ports and TLS


async def test_port_zero_binds_real_ports_and_health_answers_over_http_and_https(
    server: RunningServer,
) -> None:
    ports = json.loads((server.root / "run" / "ports.json").read_text())
    assert ports == server.ports
    assert {"http", "https"} <= set(ports)
    assert all(isinstance(p, int) and 0 < p < 65536 for p in ports.values())
    assert ports["http"] != ports["https"]

    status, body = await _health(f"http://127.0.0.1:{ports['http']}/health")
    assert (status, body["status"]) == (200, "ok")

    context = _client_context(server.root / "secrets" / "tls" / "cert.pem")
    status, body = await _health(f"https://127.0.0.1:{ports['https']}/health", context)
    assert (status, body["status"]) == (200, "ok")


async def test_https_refuses_a_client_that_does_not_trust_the_certificate(
    server: RunningServer,
) -> None:
    context = ssl.create_default_context()  # system CAs only: the self-signed cert fails
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await _health(f"https://127.0.0.1:{server.ports['https']}/health", context)


def test_secrets_are_generated_private_and_reused_on_restart(
    start_server: StartServer, make_config: MakeConfig, tmp_path: Path
) -> None:
    config_path = make_config(tmp_path)
    first = start_server(config_path)
    secrets = first.root / "secrets"
    files = {
        "jwt.key": secrets / "jwt.key",
        "tls/key.pem": secrets / "tls" / "key.pem",
        "tls/cert.pem": secrets / "tls" / "cert.pem",
    }
    assert _mode(secrets) == 0o700
    assert _mode(files["jwt.key"]) == 0o600
    assert _mode(files["tls/key.pem"]) == 0o600
    # The certificate is public; it only must not be writable by others.
    assert _mode(files["tls/cert.pem"]) & 0o022 == 0
    assert len(files["jwt.key"].read_bytes().strip()) >= 32
    before = {name: path.read_bytes() for name, path in files.items()}
    assert first.stop() == 0

    second = start_server(config_path)
    assert {name: path.read_bytes() for name, path in files.items()} == before
    assert "generated JWT" not in second.stderr_text()
    assert "generated self-signed" not in second.stderr_text()
    assert second.stop() == 0


# ------------------------------------------------------------------ signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_cleanly(server: RunningServer, sig: signal.Signals) -> None:
    ports_json = server.root / "run" / "ports.json"
    assert ports_json.is_file()
    assert server.stop(sig) == 0
    log = server.stderr_text()
    assert "stopped" in log
    assert "Traceback" not in log
    assert not ports_json.exists()


async def test_sighup_applies_the_new_log_level_and_says_so(server: RunningServer) -> None:
    config_path = server.config_path
    config = json.loads(config_path.read_text())
    config["log_level"] = "WARNING"
    config_path.write_text(json.dumps(config))
    mark = server.stderr_mark()
    server.send_signal(signal.SIGHUP)
    # The operator is told the reload worked, whatever the new level.
    server.wait_stderr("reloaded", timeout=5, after=mark)

    status, body = await _health(f"http://127.0.0.1:{server.ports['http']}/health")
    assert (status, body["status"]) == (200, "ok")
    assert server.stop() == 0
    log = server.stderr_text()
    # WARNING took effect: the INFO lines of the shutdown are gone.
    assert "shutting down" not in log[log.index("reloaded") :]
    assert "Traceback" not in log


async def test_sighup_refuses_a_bad_file_and_keeps_serving(server: RunningServer) -> None:
    config_path = server.config_path
    good = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**good, "no_such_option": True}))
    mark = server.stderr_mark()
    server.send_signal(signal.SIGHUP)
    refused = server.wait_stderr("no_such_option", after=mark)
    assert " ERROR " in refused
    status, body = await _health(f"http://127.0.0.1:{server.ports['http']}/health")
    assert (status, body["status"]) == (200, "ok")

    # Once the file is fixed, the next SIGHUP takes it.
    config_path.write_text(json.dumps(good))
    mark = server.stderr_mark()
    server.send_signal(signal.SIGHUP)
    server.wait_stderr("reloaded", after=mark)
    assert server.stop() == 0
    assert "Traceback" not in server.stderr_text()


async def test_sighup_swaps_to_the_new_certificate_for_new_connections(
    start_server: StartServer, make_config: MakeConfig, tmp_path: Path
) -> None:
    cert_a, key_a = tmp_path / "a-cert.pem", tmp_path / "a-key.pem"
    cert_b, key_b = tmp_path / "b-cert.pem", tmp_path / "b-key.pem"
    der_a = _write_cert_pair(cert_a, key_a, "first.example.test")
    der_b = _write_cert_pair(cert_b, key_b, "second.example.test")
    live_cert, live_key = tmp_path / "cert.pem", tmp_path / "key.pem"
    live_cert.write_bytes(cert_a.read_bytes())
    live_key.write_bytes(key_a.read_bytes())
    config_path = make_config(
        tmp_path, tls={"cert_file": str(live_cert), "key_file": str(live_key)}
    )
    server = start_server(config_path)
    context = _client_context(cert_a, cert_b)
    assert await _peer_certificate(server.ports["https"], context) == der_a

    live_key.write_bytes(key_b.read_bytes())
    live_cert.write_bytes(cert_b.read_bytes())
    mark = server.stderr_mark()
    server.send_signal(signal.SIGHUP)
    server.wait_stderr("reloaded", after=mark)

    assert await _peer_certificate(server.ports["https"], context) == der_b
    status, _ = await _health(f"https://127.0.0.1:{server.ports['https']}/health", context)
    assert status == 200
    # The configured pair is used; no self-signed one is made beside it.
    assert not (server.root / "secrets" / "tls").exists()


async def test_sighup_keeps_the_data_directory_given_with_data(
    start_server: StartServer, make_config: MakeConfig, tmp_path: Path
) -> None:
    """``--data`` must survive a reload: same certificate, same ports.json, nothing elsewhere."""
    config_path = make_config(tmp_path, mail_root=str(tmp_path / "from-file"))
    data = tmp_path / "from-cli"
    server = start_server(config_path, data=data)
    assert server.root == data
    # Not verifying: the point is to see which certificate is shown, even a wrong one.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    before = await _peer_certificate(server.ports["https"], context)

    mark = server.stderr_mark()
    server.send_signal(signal.SIGHUP)
    server.wait_stderr(lambda line: "reloaded" in line or "refused" in line, after=mark)

    assert await _peer_certificate(server.ports["https"], context) == before
    assert server.stop() == 0
    assert not (data / "run" / "ports.json").exists(), "stale ports.json left after stop"
    assert not (tmp_path / "from-file").exists(), "reload wrote into the file's mail_root"


# ------------------------------------------------------------------ bad configuration


@pytest.mark.parametrize(
    ("content", "key"),
    [
        ({"no_such_option": 1}, "no_such_option"),
        ({"smtp": {"no_such_option": 1}}, "smtp.no_such_option"),
        ({"smtp": {"port": "abc"}}, "smtp.port"),
        ({"imap": {"imaps_port": 70000}}, "imap.imaps_port"),
        ({"exchange_api": {"port": -1}}, "exchange_api.port"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"domains": ["not a domain"]}, "domains"),
    ],
    ids=["unknown", "unknown-nested", "type", "range", "negative", "log_level", "domain"],
)
def test_bad_config_exits_78_with_one_line_naming_the_key(
    tmp_path: Path, content: dict[str, Any], key: str
) -> None:
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({"mail_root": str(tmp_path / "data"), **content}))
    result = _serve_once(config_path)
    assert result.returncode == EX_CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert key in lines[0]
    assert str(config_path.name) in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()


def test_missing_config_file_exits_78(tmp_path: Path) -> None:
    result = _serve_once(tmp_path / "absent.json")
    assert result.returncode == EX_CONFIG
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "absent.json" in lines[0]
    assert "no such" in lines[0]


# ------------------------------------------------------------------ --demo

_CRED_RE = re.compile(r"^\s*(\S+@example\.test)\s+password:\s+(\S+)\s*$", re.MULTILINE)


def _demo_credentials(server: RunningServer) -> dict[str, str]:
    server.wait_stdout("Stop with Ctrl-C")
    return dict(_CRED_RE.findall(server.stdout_text()))


def _kind(message: EmailMessage) -> str:
    types = {part.get_content_type() for part in message.walk()}
    if "text/calendar" in types:
        return "calendar"
    if any(part.get_content_disposition() == "attachment" for part in message.walk()):
        return "attachment"
    if message.get_content_type() == "multipart/alternative" and "text/html" in types:
        return "html"
    if message.get_content_type() == "text/plain":
        return "plain"
    return message.get_content_type()


def _inbox_kinds(root: Path) -> list[str]:
    store = Store.open(root, auth=CHEAP)
    try:
        inbox = store.mailbox("alice@example.test").folder("INBOX")
        kinds = []
        for meta in inbox.refresh().messages():
            parsed = email.message_from_bytes(inbox.read(meta.uid), policy=email.policy.default)
            assert isinstance(parsed, EmailMessage)
            kinds.append(_kind(parsed))
        return kinds
    finally:
        store.close()


def test_demo_creates_users_and_sample_mail_once_and_keeps_passwords(
    start_server: StartServer, make_config: MakeConfig, tmp_path: Path
) -> None:
    config_path = make_config(tmp_path)
    first = start_server(config_path, args=["--demo"])
    creds = _demo_credentials(first)
    assert set(creds) == {"alice@example.test", "bob@example.test"}
    assert sorted(_inbox_kinds(first.root)) == ["attachment", "calendar", "html", "plain"]

    store = Store.open(first.root, auth=CHEAP)
    for address, password in creds.items():
        assert store.accounts.verify_password(address, password).address == address
    assert store.accounts.get_user("alice@example.test").admin
    store.close()
    assert first.stop() == 0
    for password in creds.values():
        assert password not in first.stderr_text()

    second = start_server(config_path, args=["--demo"])
    assert _demo_credentials(second) == creds
    assert len(_inbox_kinds(second.root)) == 4
    assert second.stop() == 0
    for password in creds.values():
        assert password not in second.stderr_text()


# ------------------------------------------------------------------ CLI beside the server


def _rmail(config_path: Path, *args: str, stdin: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``rmail --config FILE ARGS`` in the background, stdin from a file."""
    with open(stdin or os.devnull, "rb") as source:
        return subprocess.Popen(
            [sys.executable, "-m", "rmail", "--config", str(config_path), *args],
            cwd=config_path.parent,
            env=clean_env(),
            stdin=source,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )


async def test_cli_user_add_and_deliver_work_while_the_server_runs(
    server: RunningServer, tmp_path: Path
) -> None:
    add = _rmail(server.config_path, "user", "add", "carol@example.test", "--password", "pw-c")
    _, err = add.communicate(timeout=30)
    assert add.returncode == 0, err.decode()

    count = 6
    sources = []
    for i in range(count):
        source = tmp_path / f"message-{i}.eml"
        source.write_bytes(f"Subject: parallel {i}\n\nbody {i}\n".encode())
        sources.append(source)
    # All at once: the deliveries and the account change race on the same directory.
    procs = [
        _rmail(server.config_path, "deliver", "carol@example.test", stdin=source)
        for source in sources
    ]
    procs.append(
        _rmail(server.config_path, "user", "add", "dave@example.test", "--password", "pw-d")
    )
    for proc in procs:
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err.decode()

    store = Store.open(server.root, auth=CHEAP)
    try:
        inbox = store.mailbox("carol@example.test").folder("INBOX")
        metas = list(inbox.refresh().messages())
        assert [m.uid for m in metas] == list(range(1, count + 1))
        subjects = sorted(email.message_from_bytes(inbox.read(m.uid))["Subject"] for m in metas)
        assert subjects == sorted(f"parallel {i}" for i in range(count))
        assert store.accounts.verify_password("dave@example.test", "pw-d")
    finally:
        store.close()
    status, _ = await _health(f"http://127.0.0.1:{server.ports['http']}/health")
    assert status == 200
    check = _rmail(server.config_path, "check")
    out, err = check.communicate(timeout=30)
    assert check.returncode == 0, out.decode() + err.decode()
