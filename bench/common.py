"""Helpers shared by the benchmark scripts in ``bench/``.

Each script runs as ``python bench/<name>.py``, so ``bench/`` is ``sys.path[0]`` and the
scripts import from here with ``from common import ...``. Everything is Linux-only: CPU and
memory figures come from ``/proc``.

- processes: :func:`process_tree`, :func:`cpu_of`, :func:`cpu_seconds`, :func:`status_kb`,
  :func:`rss_mb`, :func:`machine_busy`, :func:`first_child`, :func:`stop_process`;
- an rmail server: :func:`rmail_config`, :func:`write_config`, :func:`create_user`,
  :func:`spawn_rmail`, :func:`wait_ports`, :func:`stop_rmail`;
- the machine and the report: :func:`cpu_model`, :func:`filesystem_of`, :func:`load_average`,
  :func:`rmail_commit`, :func:`log_problems`, :func:`write_json`, :func:`scratch_dir`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parent.parent
HOST: Final = "127.0.0.1"
DOMAIN: Final = "example.test"
USER: Final = f"alice@{DOMAIN}"
PASSWORD: Final = "bench-password"
HOSTNAME: Final = "mail.example.test"
CHEAP_AUTH: Final = {"argon2_time_cost": 1, "argon2_memory_kib": 64}  # tests/conftest.py
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
_T0: Final = time.perf_counter()

Process = asyncio.subprocess.Process


def say(text: str) -> None:
    """A progress line on stderr, with the seconds since the start."""
    print(f"# {time.perf_counter() - _T0:6.1f} s  {text}", file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant, from /proc (``root`` first)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_of(root: int) -> float:
    """CPU seconds of ``root`` and its descendants, live or exited.

    Sums utime + stime + cutime + cstime over :func:`process_tree`: a worker process that
    exited (and was waited for) still counts through its parent's cutime/cstime, which is
    what a server with short-lived children (Dovecot's, rmail's) needs to be measured whole.
    """
    total = 0
    for pid in process_tree(root):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15])
    return total / CLK_TCK


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user + system, system) CPU seconds of one process and all its threads.

    Only that process: not its children (see :func:`cpu_of` for a whole tree).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    return user + system, system


def status_kb(pid: int, key: str) -> int | None:
    """A kB figure of /proc/PID/status (``VmRSS``, ``VmHWM``...); None if it cannot be read."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def rss_mb(pid: int, *, tree: bool = False) -> float:
    """Resident memory of one process in MB (0 once it has gone).

    ``tree``: of ``pid`` and its live descendants together (:func:`process_tree`).
    """
    pids = process_tree(pid) if tree else [pid]
    return sum(status_kb(p, "VmRSS") or 0 for p in pids) / 1024


def machine_busy() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat; idle and iowait excluded)."""
    with contextlib.suppress(OSError):
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
        return (user + nice + system + irq + softirq + steal) / CLK_TCK
    return 0.0


def first_child(pid: int) -> int | None:
    """The first child of ``pid`` (the program py-spy runs), or None yet."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/task/{pid}/children").read_text().split()[0])
    return None


def free_port() -> int:
    """A TCP port on ``HOST`` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    """This process's environment with the repository first on PYTHONPATH, no RMAIL_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RMAIL_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    return env


def py_spy_exe() -> str | None:
    """py-spy on PATH or beside this Python, if it is installed."""
    exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    return exe if os.access(exe, os.X_OK) else None


async def stop_process(proc: Process, grace: float, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to a child we started and wait for it; kill it after ``grace`` s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), grace)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def attach_py_spy(
    pid: int, out: Path, *, idle: bool = False, rate: int = 200
) -> Process | None:
    """Sample the running process ``pid`` with ``py-spy record`` (raw format) into ``out``.

    ``idle`` keeps idle threads (``--idle``), else only the GIL holder (``--gil``); ``rate``
    is samples a second. None, with a note, if py-spy is not installed.
    """
    exe = py_spy_exe()
    if exe is None:
        say(f"py-spy not found; `pip install py-spy` for --py-spy {out}")
        return None
    proc = await asyncio.create_subprocess_exec(
        *(exe, "record", "--pid", str(pid), "--threads", "--rate", str(rate)),
        *(["--idle"] if idle else ["--gil"]),
        *("--format", "raw", "--output", str(out), "--nonblocking"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.5)
    return proc


async def stop_py_spy(spy: Process, grace: float) -> None:
    """SIGINT to py-spy, which then writes its profile; up to ``grace`` s for that."""
    with contextlib.suppress(ProcessLookupError):
        spy.send_signal(signal.SIGINT)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(spy.wait(), grace)
    await stop_process(spy, grace)


def log_tail(log: Path, chars: int = 3000) -> str:
    """The last ``chars`` characters of a log file ("" if there is none)."""
    with contextlib.suppress(OSError):
        return log.read_text(errors="replace")[-chars:]
    return ""


def log_problems(name: str, log: Path, pattern: str) -> list[str]:
    """One problem line if the end of ``log`` has lines matching ``pattern``, else none."""
    errors = [ln for ln in log_tail(log, 200_000).splitlines() if re.search(pattern, ln)]
    if not errors:
        return []
    return [f"{name} log has {len(errors)} error lines, first: {errors[0][:300]}"]


# -- an rmail server -------------------------------------------------------------------------


def rmail_config(
    root: Path, *, auth: dict[str, int] | None = CHEAP_AUTH, **sections: Any
) -> dict[str, Any]:
    """An rmail config on loopback with every port 0 (rmail picks; see :func:`wait_ports`).

    ``auth`` None leaves the default Argon2 settings. Each keyword in ``sections`` is merged
    into the section of that name (``imap={"max_connections": 2000}``) or added.
    """
    config: dict[str, Any] = {
        "hostname": HOSTNAME,
        "mail_root": str(root),
        "domains": [DOMAIN],
        "log_level": "WARNING",
        "smtp": {"host": HOST, "port": 0, "submission_port": 0, "smtps_port": 0},
        "imap": {"host": HOST, "port": 0, "imaps_port": 0},
        "exchange_api": {"host": HOST, "port": 0, "secure_port": 0},
    }
    if auth is not None:
        config["auth"] = auth
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(name), dict):
            config[name] = {**config[name], **value}
        else:
            config[name] = value
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    """Write ``config`` as JSON at ``path`` (its folder made if need be); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=1))
    return path


def create_user(root: Path, address: str = USER, password: str = PASSWORD) -> None:
    """Create a user in the store at ``root`` with the cheap Argon2 settings."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from rmail.config import AuthConfig
    from rmail.store import Store

    store = Store.open(root, auth=AuthConfig(**CHEAP_AUTH), hostname=HOSTNAME)
    try:
        store.create_user(address, password)
    finally:
        store.close()


async def spawn_rmail(
    config: Path,
    log: Path,
    *,
    py_spy: Path | None = None,
    idle: bool = False,
    cprofile: Path | None = None,
    append: bool = False,
    start_timeout: float = 30.0,
) -> tuple[Process, int]:
    """Start ``rmail serve`` (in the repository, output to ``log``); returns (process, pid).

    With ``py_spy``, rmail runs under ``py-spy record`` (raw format, ``--idle`` or ``--gil``)
    and the pid is rmail's own, the process py-spy started; without py-spy installed it runs
    bare, with a note. With ``cprofile``, under ``python -m cProfile -o cprofile``.
    """
    command = [sys.executable, "-m", "rmail", "serve", "--config", str(config)]
    if cprofile is not None:
        command[1:1] = ["-m", "cProfile", "-o", str(cprofile)]
    exe = py_spy_exe() if py_spy is not None else None
    if py_spy is not None and exe is None:
        say(f"py-spy not found; `pip install py-spy` for --py-spy {py_spy}")
    if exe is not None and py_spy is not None:
        # Started under py-spy: attaching with --pid fails with this pyenv build.
        command = [
            *(exe, "record", "--threads", "--rate", "250"),
            *(["--idle"] if idle else ["--gil"]),
            *("--format", "raw", "--output", str(py_spy), "--"),
            *command,
        ]
    with log.open("ab" if append else "wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=out, stderr=asyncio.subprocess.STDOUT, env=child_env(), cwd=REPO
        )
    if exe is None:
        return proc, proc.pid
    deadline = time.monotonic() + start_timeout
    while time.monotonic() < deadline:
        child = first_child(proc.pid)
        if child is not None:
            return proc, child
        await asyncio.sleep(0.005)
    raise RuntimeError("py-spy did not start rmail")


def _exit_code(proc: Process | subprocess.Popen[bytes]) -> int | None:
    return proc.poll() if isinstance(proc, subprocess.Popen) else proc.returncode


async def wait_ports(
    root: Path,
    proc: Process | subprocess.Popen[bytes],
    log: Path,
    *,
    limit: float,
    poll: float = 0.02,
) -> dict[str, int]:
    """The ports rmail listens on, from ``root/run/ports.json`` once it has written it.

    Raises RuntimeError (with the end of ``log``) if rmail exits or takes over ``limit`` s.
    """
    ports_file = root / "run" / "ports.json"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        code = _exit_code(proc)
        if code is not None:
            raise RuntimeError(f"rmail exited with {code}:\n{log_tail(log)}")
        with contextlib.suppress(FileNotFoundError, ValueError):
            ports: dict[str, int] = json.loads(ports_file.read_text())
            return ports
        await asyncio.sleep(poll)
    raise RuntimeError(f"rmail did not write run/ports.json in {limit:.0f} s")


async def stop_rmail(proc: Process, pid: int, log: Path, grace: float) -> list[str]:
    """Stop rmail started by :func:`spawn_rmail`; problems: exit status, error lines in the log.

    Under py-spy (``pid`` is not ``proc``'s), rmail gets SIGTERM and py-spy then writes its
    profile and exits; it gets SIGINT if it has not after ``grace`` + 10 s.
    """
    if pid != proc.pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), grace + 10)
        except TimeoutError:
            await stop_process(proc, grace, signal.SIGINT)
        problems = []
    else:
        await stop_process(proc, grace)
        problems = [] if proc.returncode == 0 else [f"rmail exited with {proc.returncode}"]
    return problems + log_problems("rmail", log, r"\b(ERROR|CRITICAL|Traceback)\b")


# -- the machine and the report --------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` or "?" without)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def filesystem_of(path: Path) -> tuple[str, str, str]:
    """(mount point, type, device) of the filesystem holding ``path``, from /proc/mounts."""
    real = os.path.realpath(path)
    best = ("/", "?", "?")
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype, *_ = line.split()
            mnt = mnt.replace("\\040", " ")
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    return best


def load_average(count: int = 1) -> str:
    """The first ``count`` load averages (1, 5, 15 minutes): other work skews every figure."""
    with contextlib.suppress(OSError), open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:count])
    return "?"


def rmail_commit(*, dirty: bool = True) -> str:
    """The repository's short commit, with a note if ``rmail/`` has uncommitted changes."""

    def git(*args: str) -> str:
        run = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return run.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "?"
    if dirty and git("status", "--porcelain", "rmail"):
        return f"{rev} + uncommitted changes in rmail/"
    return rev


def write_json(path: str | Path, doc: Any) -> None:
    """Write the figures as indented JSON (the ``--json PATH`` of every script)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


@contextlib.contextmanager
def scratch_dir(
    prefix: str, parent: str | Path | None, keep: bool, note: Callable[[str], None] = say
) -> Iterator[Path]:
    """A fresh temporary directory, removed at the end unless ``keep`` (then ``note``-d)."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield base
    finally:
        if keep:
            note(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
