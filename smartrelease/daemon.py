"""A program left running in the background: the sandbox's registry, the Prefect
server, the sandbox's workers. Its pid is in a file, its output in a log, and it
is stopped with its whole process group (a worker's flow runs, the server's
services), so nothing started here outlives `down`."""

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from smartrelease.redact import mask

STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class Background:
    pid_file: Path
    log_file: Path

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
        stop_group(pid, timeout_s)
        return True

    def log_tail(self, lines: int = 6) -> str:
        """Its last log lines, on one line, secrets masked (for an error message)."""
        try:
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return mask(" | ".join(line.strip() for line in text if line.strip()))


def stop_group(pid: int, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Stop the process group led by `pid`: SIGTERM, then SIGKILL once `timeout_s` is up."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:  # our own child (started by this process): reap it
            if os.waitpid(pid, os.WNOHANG)[0]:
                break
        except ChildProcessError:
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        _kill_group(pid)
        return
    # The leader is gone; what it started in its group (a flow run) goes too.
    _kill_group(pid)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
