"""A program left running in the background: the sandbox's registry, the Prefect
server, the sandbox's workers. Its pid is in a file, its output in a log, and it
is stopped with everything it started (a worker's flow runs, in sessions of their
own; the server's services), so nothing started here outlives `down`."""

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from smartrelease.redact import mask

STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class Background:
    pid_file: Path
    log_file: Path
    # For a program that does not end on SIGTERM by itself once what it started has
    # ended: the seconds it is given then, before SIGKILL (None: the whole timeout).
    alone_s: float | None = None

    def pid(self) -> int | None:
        """The pid, if that process is alive."""
        try:
            pid = int(self.pid_file.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def start(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> subprocess.Popen:
        """Start `argv` in a session of its own, output appended to the log."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(proc.pid))
        return proc

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM to its process group, SIGKILL after `timeout_s`; False if it was not running."""
        pid = self.pid()
        self.pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        stop_group(pid, timeout_s, self.alone_s)
        return True

    def log_tail(self, lines: int = 6) -> str:
        """Its last log lines, on one line, secrets masked (for an error message)."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return mask(" | ".join(line.strip() for line in text if line.strip()))


def stop_group(pid: int, timeout_s: float = STOP_TIMEOUT_S, alone_s: float | None = None) -> None:
    """Stop what `pid` leads, as `systemctl stop` stops a unit: SIGTERM to its process
    group and to every process it started in another one (a Prefect worker starts each
    flow run in a session of its own), each process signalled once (a second SIGTERM
    would land in the first one's clean-up), then SIGKILL to what is left once
    `timeout_s` is up, or `alone_s` after the leader is the last one running."""
    try:
        group = os.getpgid(pid)
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except (ProcessLookupError, psutil.NoSuchProcess):
        return
    elsewhere = [proc for proc in tree if _group(proc) not in (group, None)]
    _signal(group, elsewhere, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in tree):
        try:  # our own child (started by this process): reap it
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if alone_s is not None and not any(_alive(p) for p in tree[1:]):
            deadline, alone_s = min(deadline, time.monotonic() + alone_s), None
        time.sleep(0.2)
    # Whatever is left, and what the leader's group started meanwhile, goes too.
    _signal(group, [p for p in tree if _alive(p)], signal.SIGKILL)


def _group(proc: "psutil.Process") -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None


def _alive(proc: "psutil.Process") -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _signal(group: int, processes: list["psutil.Process"], sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:
        pass
    for proc in processes:
        try:
            if proc.is_running():  # (is_running also checks the pid was not reused)
                proc.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
