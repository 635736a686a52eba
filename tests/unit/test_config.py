"""The configuration schema and loader: defaults, validation, environment, paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rmail import config as config_mod
from rmail.config import Config, load, parse_host_port
from rmail.errors import ConfigError


def _write(tmp_path: Path, data: Any, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _error(tmp_path: Path, data: Any, env: dict[str, str] | None = None) -> str:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load(path, env=env or {})
    return str(info.value)


# ------------------------------------------------------------------ defaults


def test_defaults_load_without_a_file() -> None:
    config = load(None, env={})
    assert config == Config()
    assert config.source is None
    assert (config.smtp.port, config.smtp.submission_port, config.smtp.smtps_port) == (
        2525,
        2587,
        2465,
    )
    assert (config.imap.port, config.imap.imaps_port) == (1143, 1993)
    assert (config.exchange_api.port, config.exchange_api.secure_port) == (9002, 9003)
    assert config.exchange_api.host == "127.0.0.1"
    assert config.mail_root == "./mailstore"
    assert config.log_level == "INFO"
    assert config.store.fsync is True


def test_an_empty_file_gives_the_defaults_and_remembers_its_path(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    config = load(path, env={})
    assert config.replace(source=None) == Config()
    assert config.source == str(path.absolute())


def test_the_example_loads_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(config_mod.example_json())
    assert load(path, env={}).replace(source=None) == Config()


def test_values_are_normalized(tmp_path: Path) -> None:
    config = load(
        _write(
            tmp_path,
            {
                "hostname": "Mail.Example.ORG.",
                "domains": ["A.test", "b.TEST."],
                "log_level": "debug",
            },
        ),
        env={},
    )
    assert config.hostname == "mail.example.org"
    assert config.domains == ["a.test", "b.test"]
    assert config.log_level == "DEBUG"


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, {"smtp": {"port": 25, "max_recipients": 7}})
    config = load(path, env={}, overrides={"smtp": {"port": 2500}})
    assert (config.smtp.port, config.smtp.max_recipients) == (2500, 7)


# ------------------------------------------------------------------ unknown keys and bad values


def test_an_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    message = _error(tmp_path, {"smtpp": {}})
    assert "unknown key" in message
    assert "smtpp" in message
    assert "config.json" in message


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"smtp": {"prot": 25}}, "smtp.prot"),
        ({"auth": {"argon2_cost": 1}}, "auth.argon2_cost"),
    ],
)
def test_an_unknown_nested_key_is_named_by_its_dotted_path(
    tmp_path: Path, data: dict[str, Any], key: str
) -> None:
    message = _error(tmp_path, data)
    assert "unknown key" in message
    assert key in message


def test_the_internal_source_field_is_not_a_key(tmp_path: Path) -> None:
    assert "source" in _error(tmp_path, {"source": "x"})


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"smtp": {"port": "abc"}}, "smtp.port", "whole number"),
        ({"smtp": {"port": 25.0}}, "smtp.port", "whole number"),
        ({"smtp": {"port": True}}, "smtp.port", "whole number"),
        ({"smtp": {"port": 70000}}, "smtp.port", "0..65535"),
        ({"imap": {"imaps_port": -1}}, "imap.imaps_port", "0..65535"),
        ({"exchange_api": {"secure_port": 65536}}, "exchange_api.secure_port", "0..65535"),
        ({"smtp": {"max_message_size": 10}}, "smtp.max_message_size", "1024"),
        ({"relay": {"enabled": "yes"}}, "relay.enabled", "true or false"),
        ({"domains": "example.com"}, "domains", "list"),
        ({"domains": [1]}, "domains", "list"),
        ({"hostname": 5}, "hostname", "string"),
        ({"tls": {"cert_file": 5}}, "tls.cert_file", "string"),
        ({"smtp": 25}, "smtp", "object"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(
    tmp_path: Path, data: dict[str, Any], key: str, words: str
) -> None:
    message = _error(tmp_path, data)
    assert key in message
    assert words in message


def test_a_port_of_zero_means_pick_one_and_is_allowed(tmp_path: Path) -> None:
    config = load(_write(tmp_path, {"smtp": {"port": 0}, "exchange_api": {"port": 0}}), env={})
    assert config.smtp.port == 0
    assert config.exchange_api.port == 0


@pytest.mark.parametrize("level", ["LOUD", "", "info2"])
def test_a_bad_log_level_is_refused(tmp_path: Path, level: str) -> None:
    assert "log_level" in _error(tmp_path, {"log_level": level})


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "missing.json", env={})
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: cannot read"):
        load(bad_json, env={})
    with pytest.raises(ConfigError, match="JSON object"):
        load(_write(tmp_path, [1, 2]), env={})


# ------------------------------------------------------------------ environment


def test_environment_overrides_sections_and_lists(tmp_path: Path) -> None:
    path = _write(tmp_path, {"smtp": {"port": 25, "max_recipients": 9}, "domains": ["x.test"]})
    config = load(
        path,
        env={
            "RMAIL_SMTP_PORT": "2500",
            "RMAIL_EXCHANGE_API_PORT": "8080",
            "RMAIL_DOMAINS": "a.test, B.test,,",
            "RMAIL_STORE_FSYNC": "0",
            "UNRELATED": "1",
        },
    )
    assert config.smtp.port == 2500
    assert config.smtp.max_recipients == 9  # the rest of the section stays
    assert config.exchange_api.port == 8080
    assert config.domains == ["a.test", "b.test"]
    assert config.store.fsync is False


@pytest.mark.parametrize(
    ("raw", "value"), [("1", True), ("true", True), ("ON", True), ("no", False), ("off", False)]
)
def test_environment_booleans(raw: str, value: bool) -> None:
    assert load(None, env={"RMAIL_STORE_FSYNC": raw}).store.fsync is value


def test_environment_null_for_optional_keys() -> None:
    config = load(None, env={"RMAIL_EXCHANGE_API_TOKEN_SECRET": "null"})
    assert config.exchange_api.token_secret is None
    config = load(None, env={"RMAIL_EXCHANGE_API_TOKEN_SECRET": "s3cret"})
    assert config.exchange_api.token_secret == "s3cret"


def test_overrides_win_over_the_environment() -> None:
    config = load(None, env={"RMAIL_SMTP_PORT": "2500"}, overrides={"smtp": {"port": 2600}})
    assert config.smtp.port == 2600


def test_a_bad_environment_value_names_the_variable(tmp_path: Path) -> None:
    """The file is fine; blaming it for a value it does not contain sends people astray."""
    path = _write(tmp_path, {})
    with pytest.raises(ConfigError) as info:
        load(path, env={"RMAIL_SMTP_PORT": "abc"})
    assert "RMAIL_SMTP_PORT" in str(info.value)
    with pytest.raises(ConfigError, match=r"smtp\.port"):
        load(None, env={"RMAIL_SMTP_PORT": "99999"})
    with pytest.raises(ConfigError, match=r"store\.fsync"):
        load(None, env={"RMAIL_STORE_FSYNC": "maybe"})


# ------------------------------------------------------------------ paths


def test_a_relative_mail_root_is_taken_from_the_config_files_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load(_write(etc, {"mail_root": "store"}), env={})
    assert config.root == etc / "store"
    # Given by a relative path to the file itself, too.
    config = load(Path("..") / "etc" / "config.json", env={})
    assert config.root == (etc / "store").resolve()
    # An absolute mail_root is used as it is.
    config = load(_write(etc, {"mail_root": str(tmp_path / "abs")}), env={})
    assert config.root == tmp_path / "abs"


def test_without_a_file_a_relative_mail_root_is_taken_from_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load(None, env={}).root == tmp_path / "mailstore"


# ------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "hostname", ["", "-mail.example.com", "mail_x.example.com", "a..b", "x" * 64 + ".com", "a b"]
)
def test_a_bad_hostname_is_refused(tmp_path: Path, hostname: str) -> None:
    assert "hostname" in _error(tmp_path, {"hostname": hostname})


@pytest.mark.parametrize("hostname", ["localhost", "mail.example.com", "MX1.Example.org.", "a-b.c"])
def test_a_good_hostname_is_taken(tmp_path: Path, hostname: str) -> None:
    config = load(_write(tmp_path, {"hostname": hostname}), env={})
    assert config.hostname == hostname.lower().rstrip(".")


@pytest.mark.parametrize("domains", [[], ["ok.test", "bad domain"], ["@example.com"], [""]])
def test_bad_domains_are_refused(tmp_path: Path, domains: list[str]) -> None:
    assert "domains" in _error(tmp_path, {"domains": domains})


def test_a_bad_smarthost_is_refused(tmp_path: Path) -> None:
    assert "relay.smarthost" in _error(tmp_path, {"relay": {"smarthost": "bad host"}})
    config = load(_write(tmp_path, {"relay": {"smarthost": "smtp.example.com"}}), env={})
    assert config.relay.smarthost == "smtp.example.com"


@pytest.mark.parametrize(
    ("relay", "key"),
    [
        ({"nameservers": ["127.0.0.1:99999"]}, "relay.nameservers"),
        ({"nameservers": ["not a server"]}, "relay.nameservers"),
        ({"routes": {"remote.test": "host:port"}}, "relay.routes"),
        ({"routes": {"bad domain": "127.0.0.1:25"}}, "relay.routes"),
        ({"routes": ["remote.test=127.0.0.1"]}, "relay.routes"),
        ({"routes": {"remote.test": 25}}, "relay.routes"),
        ({"smarthost_tls": "sometimes"}, "relay.smarthost_tls"),
        ({"dkim_selector": "a.b"}, "relay.dkim_selector"),
    ],
)
def test_bad_relay_settings_are_refused(tmp_path: Path, relay: dict[str, Any], key: str) -> None:
    assert key in _error(tmp_path, {"relay": relay})


def test_relay_routes_and_nameservers_from_file_and_environment(tmp_path: Path) -> None:
    data = {"relay": {"routes": {"remote.test": "127.0.0.1:2526"}, "nameservers": ["[::1]:53"]}}
    config = load(_write(tmp_path, data), env={})
    assert config.relay.routes == {"remote.test": "127.0.0.1:2526"}
    assert config.relay.nameservers == ["[::1]:53"]
    env = {"RMAIL_RELAY_ROUTES": "a.test=10.0.0.1:25, b.test=mx.b.test"}
    assert load(None, env=env).relay.routes == {"a.test": "10.0.0.1:25", "b.test": "mx.b.test"}
    assert Config().relay.routes == {} and Config().relay.routes is not Config().relay.routes


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1", ("127.0.0.1", 25)),
        ("127.0.0.1:53", ("127.0.0.1", 53)),
        ("mx.example.com:2525", ("mx.example.com", 2525)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 25)),
        ("host:0", None),
        ("host:x", None),
        ("[::1", None),
        ("bad host", None),
    ],
)
def test_parse_host_port(text: str, parsed: tuple[str, int] | None) -> None:
    assert parse_host_port(text, 25) == parsed


# ------------------------------------------------------------------ TLS files


def test_a_tls_cert_without_a_key_is_refused(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    message = _error(tmp_path, {"tls": {"cert_file": str(cert)}})
    assert "tls.cert_file" in message
    assert "tls.key_file" in message
    message = _error(tmp_path, {"tls": {"key_file": str(cert)}})
    assert "tls.key_file" in message


def test_tls_files_must_exist(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    message = _error(tmp_path, {"tls": {"cert_file": str(cert), "key_file": "/nonexistent.pem"}})
    assert "tls.key_file" in message
    config = load(
        _write(tmp_path, {"tls": {"cert_file": str(cert), "key_file": str(cert)}}), env={}
    )
    assert config.tls.cert_file == str(cert)


# ------------------------------------------------------------------ generated documents


def test_the_reference_lists_every_key() -> None:
    text = config_mod.reference_markdown()
    example = json.loads(config_mod.example_json())
    for key, value in example.items():
        if isinstance(value, dict):
            for sub in value:
                assert f"`{key}.{sub}`" in text
        else:
            assert f"`{key}`" in text
