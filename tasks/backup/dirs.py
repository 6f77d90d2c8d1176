"""Preflight `backup-dirs`: BACKUP_DIR and WAL_ARCHIVE_DIR exist and take a durable write."""

import os
import uuid
from pathlib import Path

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.tasks.runbook_task import runbook_task

STEP = "backup-dirs"


def probe_writable(directory: Path) -> str | None:
    """Write, fsync and remove a probe file. Returns the problem, or None."""
    if not directory.exists():
        return f"{directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    probe = directory / f".smartrelease-probe-{uuid.uuid4().hex}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, b"smartrelease write probe\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return f"{directory} is not writable: {exc.strerror}"
    finally:
        probe.unlink(missing_ok=True)
    return None


def check_backup_dirs(env: Environment) -> Finding:
    problems = []
    checked = []
    for key in ("BACKUP_DIR", "WAL_ARCHIVE_DIR"):
        value = getattr(env.app, key.lower())
        if not value:
            problems.append(f"{key} is not set")
            continue
        if problem := probe_writable(Path(value)):
            problems.append(f"{key} {problem}")
        else:
            checked.append(f"{key} {value}")
    if problems:
        raise StepFailed(STEP, "; ".join(problems))
    return Finding(detail="writable: " + ", ".join(checked))


backup_dirs_task = runbook_task(STEP, timeout_s=30)(check_backup_dirs)
