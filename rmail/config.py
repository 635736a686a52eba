"""The configuration schema, its loader and its example file.

The schema is the dataclasses below: every option has a type, a default and help text (field
metadata). ``config.json.example`` and ``docs/configuration.md`` are generated from it
(``rmail init --example``), and a test checks that both are current.

Key names are those of the original rmail (``../shared/reference/original-rmail.md``); new
keys stand beside them and are never renamed. Defaults are for a non-root run on loopback
(ARCHITECTURE "Configuration and listeners").

Sources, later wins: defaults, ``config.json``, ``RMAIL_<KEY>`` / ``RMAIL_<SECTION>_<KEY>``
environment variables. A wrong key or value raises :class:`~rmail.errors.ConfigError` naming
the file and the key; the server refuses to start rather than guessing.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from rmail.errors import ConfigError

__all__ = [
    "AuthConfig",
    "CalendarConfig",
    "Config",
    "DeliveryConfig",
    "HttpConfig",
    "ImapConfig",
    "InboundConfig",
    "RelayConfig",
    "SmtpConfig",
    "StoreConfig",
    "TlsConfig",
    "WebmailConfig",
    "example_json",
    "load",
    "parse_host_port",
    "reference_markdown",
]

LOG_LEVELS: Final = ("TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.IGNORECASE)


def _opt(default: Any, help: str, *, lo: int | None = None, hi: int | None = None) -> Any:
    """A schema field: its default, its help text and, for numbers, its range."""
    meta = {"help": help, "lo": lo, "hi": hi}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def _port(default: int, help: str) -> Any:
    return _opt(default, help + " 0 picks a free port (see run/ports.json).", lo=0, hi=65535)


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    host: str = _opt("127.0.0.1", "Address the SMTP listeners bind; 0.0.0.0 for all.")
    port: int = _port(2525, "Inbound MX port (production: 25).")
    submission_port: int = _port(2587, "Submission port with STARTTLS (production: 587).")
    smtps_port: int = _port(2465, "Submission port with implicit TLS (production: 465).")
    # RFC 5321 §4.5.3.1.7 sets no upper bound; 50 MiB is the original rmail's default.
    max_message_size: int = _opt(
        52428800, "Largest message in bytes; advertised in SIZE and enforced.", lo=1024
    )
    # RFC 5321 §4.5.3.1.8: a server must accept at least 100; the original used 50.
    max_recipients: int = _opt(50, "RCPT per transaction; more get 452.", lo=1, hi=100000)
    max_connections: int = _opt(100, "Simultaneous connections across all SMTP ports.", lo=1)
    max_messages_per_connection: int = _opt(
        50, "Messages in one connection before it is closed.", lo=1
    )
    # RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
    timeout: int = _opt(300, "Seconds a client may stay silent before it is disconnected.", lo=5)
    # Postfix's smtpd_hard_error_limit is 20; a client past it is guessing or broken.
    max_errors: int = _opt(20, "Error replies in one connection before it is closed.", lo=1)
    plaintext_auth_on_loopback: bool = _opt(
        False, "Offer AUTH without TLS to clients on 127.0.0.1/::1 (local scripts, tests)."
    )


@dataclass(frozen=True, slots=True)
class ImapConfig:
    host: str = _opt("127.0.0.1", "Address the IMAP listeners bind; 0.0.0.0 for all.")
    port: int = _port(1143, "IMAP port with STARTTLS (production: 143).")
    imaps_port: int = _port(1993, "IMAP port with implicit TLS (production: 993).")
    max_connections: int = _opt(100, "Simultaneous IMAP connections.", lo=1)
    # RFC 3501 §5.4: an authenticated client may stay idle at least 30 minutes.
    autologout_seconds: int = _opt(
        1800, "Idle seconds before an authenticated client is logged out.", lo=1800
    )
    preauth_timeout: int = _opt(
        60, "Seconds a client may take to log in before it is disconnected.", lo=5
    )
    max_bad_commands: int = _opt(
        10, "BAD replies in one connection before it is closed with BYE.", lo=1
    )
    # RFC 7162 §4: clients should be able to send lines of at least 8192 octets.
    max_line_length: int = _opt(65536, "Longest command line, literals excluded (bytes).", lo=8192)
    max_literal: int = _opt(
        1048576,
        "Largest literal outside APPEND (bytes); APPEND takes smtp.max_message_size.",
        lo=1024,
    )
    plaintext_auth_on_loopback: bool = _opt(
        False, "Allow LOGIN/AUTHENTICATE without TLS from 127.0.0.1/::1 (scripts, tests)."
    )


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = _opt("127.0.0.1", "Address the HTTP and HTTPS listeners bind.")
    port: int = _port(9002, "HTTP port: API, CalDAV, drive, webmail, autoconfig, health.")
    secure_port: int = _port(9003, "HTTPS port, same application as `port`.")
    token_secret: str | None = _opt(
        None,
        "JWT HMAC key. null: generated on first start and kept in secrets/jwt.key.",
    )
    token_lifetime: int = _opt(3600, "Seconds a JSON API token stays valid.", lo=60)
    webhook_attempts: int = _opt(
        5,
        "Tries per webhook delivery (the first plus retries); retries are in memory.",
        lo=1,
        hi=20,
    )
    webhook_retry_initial_ms: int = _opt(
        1000, "Milliseconds before the first webhook retry; doubles each time.", lo=1, hi=600000
    )
    # GitHub and Stripe give a receiver 10 seconds to answer.
    webhook_timeout: int = _opt(10, "Seconds one webhook POST may take in all.", lo=1, hi=300)
    webhook_allow_private: bool = _opt(
        False,
        "Let webhooks reach loopback, private, link-local and other non-public addresses.",
    )


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    workers: int = _opt(4, "Local delivery workers (threads doing file I/O).", lo=1, hi=256)


@dataclass(frozen=True, slots=True)
class RelayConfig:
    enabled: bool = _opt(
        True, "false: mail to external domains is refused with 550, even when authenticated."
    )
    smarthost: str = _opt("", "Send all outbound mail through this host instead of MX lookup.")
    smarthost_port: int = _opt(587, "Port of the smarthost.", lo=1, hi=65535)
    smarthost_username: str = _opt("", "AUTH PLAIN user for the smarthost; empty: no AUTH.")
    smarthost_password: str = _opt("", "AUTH PLAIN password for the smarthost.")
    smarthost_tls: str = _opt(
        "starttls",
        "TLS to the smarthost: starttls (required), implicit (port 465 style) or none.",
    )
    workers: int = _opt(4, "Messages sent at the same time.", lo=1, hi=256)
    nameservers: list[str] = _opt(  # noqa: RUF009
        [], "DNS servers as ip or ip:port for MX, SPF, DKIM and DMARC lookups; []: the system's."
    )
    port: int = _opt(
        25, "Port of remote MX hosts. Only tests and unusual networks change it.", lo=1, hi=65535
    )
    routes: dict[str, str] = _opt(  # noqa: RUF009
        {}, 'Static routes {"domain": "host:port"} used instead of MX lookup for that domain.'
    )
    # RFC 5321 §4.5.4.1: retry no sooner than 30 minutes apart is the SHOULD for a long
    # queue; the first retry is sooner here because greylisting passes after a few minutes.
    retry_initial: int = _opt(300, "Seconds before the first retry; doubles each time.", lo=1)
    retry_max: int = _opt(14400, "Longest wait between two retries, in seconds.", lo=1)
    # RFC 5321 §4.5.4.1: give up after at least 4-5 days.
    give_up_after: int = _opt(
        432000, "Seconds after queueing when a recipient still not delivered bounces.", lo=60
    )
    # RFC 5321 §4.5.3.2 suggests 5 minutes per command (10 for the end of DATA).
    timeout: int = _opt(300, "Seconds to wait for a connection or for any reply.", lo=1)
    dkim_selector: str = _opt("rmail", "DKIM selector: the record is {selector}._domainkey.")
    dkim_sign: bool = _opt(True, "Sign outbound mail with the sending domain's DKIM key.")


@dataclass(frozen=True, slots=True)
class InboundConfig:
    check_authentication: bool = _opt(
        True,
        "Evaluate SPF, DKIM and DMARC for mail on the MX port and add Authentication-Results.",
    )
    dmarc_reject: bool = _opt(
        False, "Refuse (550 5.7.1) mail failing DMARC whose domain publishes p=reject."
    )


@dataclass(frozen=True, slots=True)
class WebmailConfig:
    registration: bool = _opt(
        False, "Let visitors create accounts on the webmail's sign-up page (/webmail/register)."
    )
    registration_quota_mb: int = _opt(
        1024, "Quota in MiB of an account made on the sign-up page.", lo=1, hi=1048576
    )


@dataclass(frozen=True, slots=True)
class TlsConfig:
    cert_file: str | None = _opt(
        None, "PEM certificate chain. null: a self-signed pair in secrets/tls/ is made and reused."
    )
    key_file: str | None = _opt(None, "PEM private key matching cert_file.")


@dataclass(frozen=True, slots=True)
class StoreConfig:
    fsync: bool = _opt(
        True, "fsync every write before it is acknowledged. Turn off only for throwaway data."
    )
    journal_max_records: int = _opt(
        20000,
        "Index journal records before the snapshot is rewritten (compaction).",
        lo=10,
    )


@dataclass(frozen=True, slots=True)
class CalendarConfig:
    # Alarms are set to the minute (RFC 5545 TRIGGER is usually whole minutes).
    reminder_interval: int = _opt(
        60, "Seconds between two looks for calendar alarms (VALARM) that are due.", lo=1
    )
    scheduling: bool = _opt(
        True,
        "Calendar scheduling: CalDAV scheduling between local users (RFC 6638: scheduling "
        "Inbox and Outbox, SCHEDULE-STATUS, Schedule-Tag) and invitations by email (iMIP): "
        "send REQUEST/CANCEL/REPLY on calendar changes and apply those received.",
    )


@dataclass(frozen=True, slots=True)
class AuthConfig:
    # RFC 9106 §4 second recommended option: t=3, 64 MiB.
    argon2_time_cost: int = _opt(3, "Argon2 passes for new password hashes.", lo=1, hi=64)
    argon2_memory_kib: int = _opt(
        65536, "Argon2 memory in KiB for new password hashes.", lo=64, hi=4194304
    )
    cache_seconds: int = _opt(
        300,
        "How long a verified password is remembered (salted digest, never the password).",
        lo=0,
    )
    max_failures: int = _opt(
        10, "Failed logins per IP or per account before it is locked out.", lo=1
    )
    failure_window: int = _opt(600, "Seconds over which failed logins are counted.", lo=1)
    lockout_seconds: int = _opt(900, "How long a lockout lasts.", lo=1)


@dataclass(frozen=True, slots=True)
class Config:
    hostname: str = _opt(
        "mail.example.com", "Public FQDN: SMTP banner and EHLO, bounces, autoconfig, links."
    )
    mail_root: str = _opt("./mailstore", "Data directory holding all state (see ARCHITECTURE).")
    # _opt gives a list default its own default_factory, so no instance shares it.
    domains: list[str] = _opt(["example.com"], "Hosted domains (case-insensitive).")  # noqa: RUF009
    log_level: str = _opt("INFO", "TRACE, DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    imap: ImapConfig = field(default_factory=ImapConfig)
    exchange_api: HttpConfig = field(default_factory=HttpConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    inbound: InboundConfig = field(default_factory=InboundConfig)
    webmail: WebmailConfig = field(default_factory=WebmailConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    # Where the values came from; not a key of the file.
    source: str | None = field(default=None, metadata={"internal": True})

    @property
    def root(self) -> Path:
        """``mail_root`` as an absolute path (relative paths are taken from the config file)."""
        path = Path(self.mail_root).expanduser()
        if not path.is_absolute() and self.source:
            path = Path(self.source).resolve().parent / path
        return path.absolute()

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **changes)


def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(Config)
        if dataclasses.is_dataclass(hints[f.name])
    }


def _convert(value: Any, hint: Any, where: str, meta: Mapping[str, Any]) -> Any:
    """Check ``value`` against the type ``hint``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, where, meta)
    if origin is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return list(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{where}: expected an object of strings, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{where}: {value} is outside {lo}..{hi}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {hint!r}")  # pragma: no cover - schema bug


def _from_env(raw: str, hint: Any) -> Any:
    """Turn an environment string into the JSON value a key of type ``hint`` expects."""
    base = hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if raw.lower() in {"", "null", "none"}:
            return None
        base = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(base) is list:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if typing.get_origin(base) is dict:
        # RMAIL_RELAY_ROUTES=a.org=10.0.0.1:25,b.org=mx.b.org:2525
        pairs = [part.partition("=") for part in raw.split(",") if part.strip()]
        return {k.strip(): v.strip() for k, _, v in pairs}
    if base is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        return raw
    if base is int:
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw


def _build(cls: type, data: Mapping[str, Any], prefix: str, origin: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in known:
            raise ConfigError(f"{origin}: unknown key {prefix + key!r}")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in data:
            continue
        if dataclasses.is_dataclass(hints[name]):
            sub = data[name]
            if not isinstance(sub, dict):
                raise ConfigError(f"{origin}: {prefix}{name} must be an object")
            values[name] = _build(hints[name], sub, f"{prefix}{name}.", origin)
        else:
            values[name] = _convert(
                data[name], hints[name], f"{origin}: {prefix}{name}", f.metadata
            )
    return cls(**values)


def _env_overrides(env: Mapping[str, str]) -> dict[str, Any]:
    """Values from ``RMAIL_*`` variables, checked here so an error names the variable."""
    out: dict[str, Any] = {}
    sections = _sections()
    targets: list[tuple[str | None, type]] = [(None, Config)]
    targets += [(name, cls) for name, cls in sections.items()]
    for section, cls in targets:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal") or (section is None and f.name in sections):
                continue
            prefix = f"RMAIL_{section.upper()}_" if section else "RMAIL_"
            var = prefix + f.name.upper()
            if var not in env:
                continue
            key = f"{section}.{f.name}" if section else f.name
            where = f"environment {var} ({key})"
            value = _convert(_from_env(env[var], hints[f.name]), hints[f.name], where, f.metadata)
            if section is None:
                out[f.name] = value
            else:
                out.setdefault(section, {})[f.name] = value
    return out


def _validate(config: Config, origin: str) -> Config:
    if config.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"{origin}: log_level must be one of {', '.join(LOG_LEVELS)}")
    if not _is_hostname(config.hostname):
        raise ConfigError(f"{origin}: hostname {config.hostname!r} is not a valid host name")
    if not config.domains:
        raise ConfigError(f"{origin}: domains must name at least one domain")
    for domain in config.domains:
        if not _is_hostname(domain):
            raise ConfigError(f"{origin}: domains: {domain!r} is not a valid domain name")
    if (config.tls.cert_file is None) != (config.tls.key_file is None):
        raise ConfigError(f"{origin}: tls.cert_file and tls.key_file go together")
    for key in ("cert_file", "key_file"):
        value = getattr(config.tls, key)
        if value is not None and not Path(value).is_file():
            raise ConfigError(f"{origin}: tls.{key}: no such file {value!r}")
    relay = config.relay
    if relay.smarthost and not _is_hostname(relay.smarthost.split(":")[0]):
        raise ConfigError(f"{origin}: relay.smarthost {relay.smarthost!r} is not a host")
    if relay.smarthost_tls not in ("starttls", "implicit", "none"):
        raise ConfigError(f"{origin}: relay.smarthost_tls must be starttls, implicit or none")
    for server in relay.nameservers:
        if parse_host_port(server, 53) is None:
            raise ConfigError(f"{origin}: relay.nameservers: {server!r} is not ip or ip:port")
    for domain, target in relay.routes.items():
        if not _is_hostname(domain) or parse_host_port(target, 25) is None:
            raise ConfigError(f"{origin}: relay.routes: {domain!r}: {target!r} is not host:port")
    if not _HOST_LABEL.match(relay.dkim_selector):
        raise ConfigError(f"{origin}: relay.dkim_selector {relay.dkim_selector!r} is not a label")
    return config.replace(
        log_level=config.log_level.upper(),
        domains=[d.lower().rstrip(".") for d in config.domains],
        hostname=config.hostname.lower().rstrip("."),
    )


def parse_host_port(text: str, default_port: int) -> tuple[str, int] | None:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address; None when malformed."""
    text = text.strip()
    host, port = text, default_port
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        if rest:
            if not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        if not port_text.isdigit():
            return None
        port = int(port_text)
    if not 0 < port < 65536:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _is_hostname(host):
            return None
    return host, port


def _is_hostname(name: str) -> bool:
    labels = name.rstrip(".").split(".")
    return 0 < len(name) <= 253 and all(_HOST_LABEL.match(label) for label in labels)


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load and validate the configuration.

    Args:
        path: a config.json; None means defaults (plus environment) only. A missing file
            that was asked for by name is an error.
        env: environment to read ``RMAIL_*`` from (default ``os.environ``).
        overrides: values from the command line (same shape as the file), applied last.

    Raises:
        ConfigError: unreadable file, bad JSON, unknown key or bad value; names the key.
    """
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            with open(path, "rb") as f:
                data = json.loads(f.read())
        except FileNotFoundError:
            raise ConfigError(f"{origin}: no such config file") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{origin}: cannot read: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{origin}: the top level must be a JSON object")
    merged = _merge(data, _env_overrides(env))
    merged = _merge(merged, dict(overrides or {}))
    config = _build(Config, merged, "", origin)
    config = config.replace(source=str(Path(path).absolute()) if path is not None else None)
    return _validate(config, origin)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _as_dict(cls: type, instance: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        value = getattr(instance, f.name)
        out[f.name] = _as_dict(type(value), value) if dataclasses.is_dataclass(value) else value
    return out


def example_json() -> str:
    """The text of ``config.json.example``: every key with its default."""
    return json.dumps(_as_dict(Config, Config()), indent=2) + "\n"


def reference_markdown() -> str:
    """The configuration reference (docs/configuration.md), generated from the schema."""
    lines = [
        "# Configuration reference",
        "",
        "<!-- generated by `rmail init --print-reference`; edit rmail/config.py, not this file -->",
        "",
        "rmail reads `config.json` (given with `--config FILE` or `RMAIL_CONFIG`); with no file",
        "every key has the default below. Any key can also be set from the environment:",
        "`RMAIL_<KEY>` for top-level keys, `RMAIL_<SECTION>_<KEY>` inside a section",
        "(`RMAIL_SMTP_PORT=25`, `RMAIL_DOMAINS=a.org,b.org`). A wrong key or value stops",
        "start-up with a message naming it. `rmail init` writes a file with every key.",
        "",
    ]
    sections = _sections()
    hints = typing.get_type_hints(Config)
    lines += ["## Top level", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(Config):
        if f.name in sections or f.metadata.get("internal"):
            continue
        lines.append(_row(f.name, hints[f.name], getattr(Config(), f.name), f.metadata))
    for section, cls in sections.items():
        sub_hints = typing.get_type_hints(cls)
        lines += [
            "",
            f"## `{section}`",
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        for f in dataclasses.fields(cls):
            lines.append(
                _row(f"{section}.{f.name}", sub_hints[f.name], getattr(cls(), f.name), f.metadata)
            )
    return "\n".join(lines) + "\n"


def _row(key: str, hint: Any, default: Any, meta: Mapping[str, Any]) -> str:
    type_name = str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
    text = meta.get("help", "")
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and hi is not None:
        text += f" Range {lo}..{hi}."
    elif lo is not None:
        text += f" At least {lo}."
    return f"| `{key}` | {type_name} | `{json.dumps(default)}` | {text} |"
