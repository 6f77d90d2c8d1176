"""The one way this project runs a program: a `Command` is a plain value (argv,
environment, time limit), built and tested without running anything; `run` executes
it and turns a failure into CommandFailed naming the program, its exit code and the
lines of its standard error that say why, masked.

Secrets travel in `env` (never in argv, which `ps` shows); `env` is left out of repr().
"""

import os
import re
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from smartrelease.errors import CommandFailed
from smartrelease.files import write_private
from smartrelease.redact import mask

# Lines that name a cause, in the words PostgreSQL, Docker, Compose, git and
# mmdebstrap use; the first few are kept. Without any, the last lines are.
_CAUSE = re.compile(
    r"error|fatal|panic|denied|not permitted|could not|cannot|can't|unable|failed|failure|no such|"
    r"not found|does not exist|invalid|refused|timed out|timeout|permission|unknown|no space|read-only|"
    r"already|conflict|unhealthy|exited|killed", re.IGNORECASE)
MAX_CAUSE_LINES = 4


def cause_lines(stderr: str, stdout: str = "") -> str:
    """The lines of a failed program's output that name the cause, joined by ' | ',
    masked and each cut to 400 characters."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    named = [line for line in lines if _CAUSE.search(line)]
    if not named and not lines:  # some programs (initdb's notes, compose run) say why on stdout
        lines = [line.strip() for line in stdout.splitlines() if line.strip()]
        named = [line for line in lines if _CAUSE.search(line)]
    chosen = named[:MAX_CAUSE_LINES] if named else lines[-MAX_CAUSE_LINES:]
    # Masked before the cut: a secret across it would leave its first characters.
    return " | ".join(mask(line)[:400] for line in chosen)


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    timeout_s: float
    env: Mapping[str, str] | None = field(default=None, repr=False)  # None: this process's environment
    name: str = ""  # how errors call it; default: the program's name (and a subcommand for docker)
    cwd: str | None = None  # None: this process's working directory
    # Files the program reads, (path, text): written before it runs (smartrelease/files.py).
    files: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        if not self.name:
            program = os.path.basename(self.argv[0])
            sub = [a for a in self.argv[1:3] if not a.startswith("-")]
            object.__setattr__(self, "name", " ".join([program, *sub[:1]]) if program in ("docker", "git") else program)


def _write_files(command: Command) -> None:
    for path, text in command.files:
        write_private(Path(path), text)


def run(command: Command, *, input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `command` to its end within its time limit; output is captured as text."""
    _write_files(command)
    try:
        proc = subprocess.run(command.argv, env=None if command.env is None else dict(command.env), input=input,
                              capture_output=True, timeout=command.timeout_s, cwd=command.cwd)
    except FileNotFoundError:
        raise CommandFailed(command.name, 127, f"{command.argv[0]} is not installed (not found on PATH)") from None
    except PermissionError:
        raise CommandFailed(command.name, 126, f"{command.argv[0]} is not executable") from None
    except subprocess.TimeoutExpired as exc:
        out = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandFailed(command.name, None, f"no result within {command.timeout_s:g} s"
                            + (f"; last said: {cause_lines(out)}" if out.strip() else "")) from None
    result = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(errors="replace"),
                                         proc.stderr.decode(errors="replace"))
    if check and result.returncode != 0:
        raise failure(command.name, result.returncode, result.stderr, result.stdout)
    return result


def start(command: Command, **popen) -> subprocess.Popen:
    """Start `command` for a pipeline run by hand (its streams as `popen` says); the
    caller bounds it with a Deadline and turns its exit status into `failure`."""
    _write_files(command)
    try:
        return subprocess.Popen(command.argv, env=None if command.env is None else dict(command.env), cwd=command.cwd,
                                **popen)
    except FileNotFoundError:
        raise CommandFailed(command.name, 127, f"{command.argv[0]} is not installed (not found on PATH)") from None
    except PermissionError:
        raise CommandFailed(command.name, 126, f"{command.argv[0]} is not executable") from None


def failure(name: str, exit_code: int, stderr: str | bytes, stdout: str | bytes = "") -> CommandFailed:
    """The error for a program that exited `exit_code` (for pipelines run by hand)."""
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    if isinstance(stdout, bytes):
        stdout = stdout.decode(errors="replace")
    return CommandFailed(name, exit_code, cause_lines(stderr, stdout))


class Deadline:
    """Kills the processes of a pipeline that outlive `timeout_s` (a blocking read on
    a pipe has no timeout of its own); `expired` tells afterwards whether it did."""

    def __init__(self, timeout_s: float, *procs: subprocess.Popen):
        self.timeout_s = timeout_s
        self.procs = procs
        self.expired = False
        self._timer = threading.Timer(timeout_s, self._kill)
        self._timer.daemon = True

    def _kill(self) -> None:
        self.expired = True
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()

    def __enter__(self) -> "Deadline":
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
