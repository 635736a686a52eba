"""Secrets generated on first start and kept in ``{mail_root}/secrets/`` (mode 0700).

- ``jwt.key``: the JSON API's HMAC key when ``exchange_api.token_secret`` is null;
- ``tls/cert.pem`` + ``tls/key.pem``: a self-signed pair when ``tls.cert_file`` is null;
- ``dkim/{domain}.key``: the RSA key that signs a hosted domain's outbound mail, made the
  first time that domain sends (or ``rmail dkim show`` asks for it).

Nothing here logs a secret's value.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import logging
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from rmail.store.fsio import atomic_write, check_component, fsync_dir

__all__ = [
    "dkim_public_record",
    "ensure_dkim_key",
    "ensure_jwt_key",
    "ensure_tls_pair",
    "secrets_dir",
]

logger = logging.getLogger(__name__)

# A self-signed certificate is only a stand-in for a real one; two years keeps clients'
# warnings about expiry out of the way of a demo or a test.
SELF_SIGNED_DAYS = 730


def secrets_dir(root: Path) -> Path:
    path = root / "secrets"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def ensure_jwt_key(root: Path) -> bytes:
    """The persisted JWT key, created (256 random bits) if missing."""
    path = secrets_dir(root) / "jwt.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32).encode()
        atomic_write(path, key + b"\n")
        logger.info("generated JWT signing key in %s", path)
        return key


# RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits and SHOULD use 2048.
DKIM_KEY_BITS = 2048


def ensure_dkim_key(root: Path, domain: str) -> bytes:
    """The PEM (PKCS#1) private key that signs ``domain``'s mail, created if missing.

    Two processes creating it at once agree on one key: each writes its own temporary
    file and links it into place; the one that loses reads the winner's.
    """
    domain = check_component(domain.lower().rstrip("."), what="domain")
    folder = secrets_dir(root) / "dkim"
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{domain}.key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    key = rsa.generate_private_key(public_exponent=65537, key_size=DKIM_KEY_BITS)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    temp = folder / f".{domain}.{secrets.token_hex(6)}.tmp"
    atomic_write(temp, pem)
    try:
        os.link(temp, path)
    except FileExistsError:
        pass
    else:
        fsync_dir(folder)
        logger.info("generated DKIM key for %s in %s", domain, path)
    finally:
        temp.unlink()
    return path.read_bytes()


def dkim_public_record(private_pem: bytes) -> str:
    """The TXT record value to publish for a key: ``v=DKIM1; k=rsa; p=...``."""
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def ensure_tls_pair(root: Path, hostname: str) -> tuple[Path, Path]:
    """The self-signed (cert, key) pair for ``hostname``, created if missing."""
    tls = secrets_dir(root) / "tls"
    tls.mkdir(exist_ok=True)
    cert_path, key_path = tls / "cert.pem", tls / "key.pem"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    atomic_write(
        key_path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    atomic_write(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    logger.info("generated self-signed TLS certificate for %s in %s", hostname, tls)
    return cert_path, key_path
