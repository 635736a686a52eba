"""Shared fixtures: a test config file, and the real ``rmail serve`` process.

``make_config(tmp_path, **overrides)`` writes a config.json with every listener on port 0,
the data directory inside ``tmp_path``, cheap argon2, DEBUG logging and, as the DNS server,
:func:`offline_dns` (so no test asks the internet's DNS; a test with records of its own
passes ``relay={"nameservers": [dns.address]}``).

``RunningServer`` starts ``python -m rmail serve`` as a child process, waits for its ready
signal (the "rmail ready" log line, then one answered ``/health``) and reads the ports it
bound from ``run/ports.json``. Output is collected by reader threads, so a test can wait for
a line with a deadline instead of sleeping.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Final, Protocol

import pytest
from dns_server import DnsServer

from rmail import config as config_mod

# Argon2 at its cheapest: hashing costs microseconds instead of ~100 ms per user.
CHEAP_AUTH: Final[dict[str, Any]] = {"auth": {"argon2_time_cost": 1, "argon2_memory_kib": 64}}
READY_LINE: Final = "rmail ready"
# Start-up of a fresh data directory (TLS key generation, imports) takes well under a second;
# the margin is for a loaded CI machine.
READY_TIMEOUT: Final = 20.0
STOP_TIMEOUT: Final = 15.0


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_offline: list[DnsServer] = []


def offline_dns() -> str:
    """``ip:port`` of a loopback DNS server that knows no name (NXDOMAIN for every query).

    Started on first use and kept for the whole run: a server under test that looks names
    up (SPF and DMARC for mail on the MX port) gets a fast, definite "no such domain"
    instead of going out to the internet, with or without a network.
    """
    if not _offline:
        server = DnsServer().__enter__()
        atexit.register(server.__exit__)
        _offline.append(server)
    return _offline[0].address


def make_config(tmp_path: Path, **overrides: Any) -> Path:
    """Write ``tmp_path/config.json`` for a test and return its path.

    ``overrides`` are merged section by section (``smtp={"max_recipients": 5}`` keeps the
    other smtp keys); the file name can be changed with ``_name="other.json"``.
    """
    name = str(overrides.pop("_name", "config.json"))
    data: dict[str, Any] = {
        "hostname": "mail.example.test",
        "mail_root": str(tmp_path / "data"),
        "domains": ["example.test"],
        "log_level": "DEBUG",
        "smtp": {"port": 0, "submission_port": 0, "smtps_port": 0},
        "imap": {"port": 0, "imaps_port": 0},
        "exchange_api": {"port": 0, "secure_port": 0},
        "relay": {"nameservers": [offline_dns()]},
        **CHEAP_AUTH,
    }
    data = _merge(data, overrides)
    path = tmp_path / name
    path.write_text(json.dumps(data, indent=1))
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child ``rmail``: ours without any ``RMAIL_*`` leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMAIL_")}
    env.update(extra)
    return env


class _Lines:
    """Lines of one output stream, collected by a thread; waitable with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def wait_for(self, needle: str | Callable[[str], bool], timeout: float, start: int = 0) -> str:
        """The first line from index ``start`` matching ``needle``; AssertionError on timeout."""
        match = needle if callable(needle) else (lambda line: needle in line)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self._lines[start:]:
                    if match(line):
                        return line
                start = len(self._lines)
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    raise AssertionError(
                        f"no line matching {needle!r} within {timeout}s "
                        f"(stream {'closed' if self._closed else 'open'}):\n{''.join(self._lines)}"
                    )
                self._cond.wait(remaining)

    def count(self) -> int:
        with self._cond:
            return len(self._lines)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class RunningServer:
    """One ``rmail serve`` child process."""

    def __init__(
        self,
        config_path: Path,
        *,
        args: Sequence[str] = (),
        data: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.args = list(args)
        self.data = data
        self.cwd = cwd or config_path.parent
        self.env = clean_env()
        overrides = {"mail_root": str(data.absolute())} if data is not None else {}
        self.root: Path = config_mod.load(config_path, env=self.env, overrides=overrides).root
        self.ports: dict[str, int] = {}
        self.returncode: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._out: _Lines | None = None
        self._err: _Lines | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "rmail", "serve", "--config", str(self.config_path)]
        if self.data is not None:
            cmd += ["--data", str(self.data)]
        return cmd + self.args

    def start(self) -> RunningServer:
        """Start the process and return once it serves; fails with its output otherwise."""
        self._proc = subprocess.Popen(
            self.command(),
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._out = _Lines(self._proc.stdout)
        self._err = _Lines(self._proc.stderr)
        try:
            self._err.wait_for(READY_LINE, READY_TIMEOUT)
            self.ports = json.loads((self.root / "run" / "ports.json").read_text())
            # "rmail ready" is logged before serve() installs its signal handlers (and, with
            # --demo, before the demo data exists); an answered request proves the loop got
            # past both, since serve() does not await in between.
            self.http_get("/health")
        except BaseException:
            self.kill()
            raise
        return self

    def http_get(self, path: str) -> bytes:
        """A blocking GET on the HTTP port (for readiness, not for assertions on HTTP)."""
        url = f"http://127.0.0.1:{self.ports['http']}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
            return body

    def stdout_text(self) -> str:
        assert self._out is not None
        return self._out.text()

    def stderr_text(self) -> str:
        assert self._err is not None
        return self._err.text()

    def stderr_mark(self) -> int:
        """Position in stderr, to wait only for lines logged after it."""
        assert self._err is not None
        return self._err.count()

    def wait_stderr(
        self, needle: str | Callable[[str], bool], timeout: float = 10.0, *, after: int = 0
    ) -> str:
        assert self._err is not None
        return self._err.wait_for(needle, timeout, after)

    def wait_stdout(self, needle: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        assert self._out is not None
        return self._out.wait_for(needle, timeout)

    def send_signal(self, sig: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(sig)

    @property
    def running(self) -> bool:
        return self._proc is not None and self.returncode is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig``, wait for the exit and return the exit status."""
        assert self._proc is not None
        if self.returncode is None:
            self._proc.send_signal(sig)
            try:
                self.returncode = self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"rmail serve did not exit {timeout}s after {sig!r}:\n{self.stderr_text()}"
                ) from None
            self._join()
        return self.returncode

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(STOP_TIMEOUT)
        if self._proc is not None:
            self.returncode = self._proc.returncode
        self._join()

    def _join(self) -> None:
        for lines in (self._out, self._err):
            if lines is not None:
                lines.join(5.0)


class MakeConfig(Protocol):
    def __call__(self, tmp_path: Path, **overrides: Any) -> Path: ...


class StartServer(Protocol):
    def __call__(
        self,
        config_path: Path | None = None,
        *,
        args: Sequence[str] = (),
        data: Path | None = None,
    ) -> RunningServer: ...


@pytest.fixture(name="make_config")
def make_config_fixture() -> MakeConfig:
    return make_config


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """Start ``rmail serve`` processes; each is stopped at teardown and must exit 0."""
    started: list[RunningServer] = []

    def start(
        config_path: Path | None = None,
        *,
        args: Sequence[str] = (),
        data: Path | None = None,
    ) -> RunningServer:
        server = RunningServer(config_path or make_config(tmp_path), args=args, data=data)
        started.append(server)
        return server.start()

    yield start
    failures = []
    for server in started:
        if server.running:
            code = server.stop()
            if code != 0:
                failures.append(f"exit {code}:\n{server.stderr_text()}")
    assert not failures, "\n".join(failures)


@pytest.fixture
def server(start_server: StartServer) -> RunningServer:
    """``rmail serve`` on a fresh data directory, with the default test config."""
    return start_server()
