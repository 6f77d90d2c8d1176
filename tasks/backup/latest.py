"""Preflight `backups`: the latest logical backup exists, is fresh, and reads whole.

Reading a backup whole (checksum, decryption, pg_restore of every data block) takes
as long as a restore's read; a 1 GB backup is checked on every preflight. So a
backup read whole once is remembered on this host (`verified_backups.json` in
SMARTRELEASE_CACHE) by its path, size, modification time and SHA-256: the next check
of the same, unchanged file computes its SHA-256 again (one read, no decryption, no
pg_restore) and, when it is the one verified, says so instead of reading it again.
Any change to its bytes changes the SHA-256 and it is read whole again.
"""

import json
import os
import time
from pathlib import Path

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.files import create_new
from smartrelease.tasks.backup.crypto import recorded_checksum, sha256_file
from smartrelease.tasks.backup.files import BackupUnreadable, backup_size, dump_format, newest_backup, read_whole
from smartrelease.tasks.pg_client import pg_tools
from smartrelease.tasks.runbook_task import runbook_task

STEP = "backups"
MEMORY_FILE = "verified_backups.json"
REMEMBERED = 50  # backups remembered; the oldest are forgotten


def cache_dir() -> Path:
    """This host's cache of smartrelease: SMARTRELEASE_CACHE (default ~/.cache/smartrelease)."""
    return Path(os.environ.get("SMARTRELEASE_CACHE") or Path.home() / ".cache" / "smartrelease")


def _memory() -> dict:
    try:
        data = json.loads((cache_dir() / MEMORY_FILE).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def verified_before(path: Path) -> str | None:
    """The format recorded when this exact file (same bytes) was read whole, else None."""
    name, size, mtime = _key(path)
    entry = _memory().get(name)
    if not isinstance(entry, dict) or entry.get("size") != size or entry.get("mtime_ns") != mtime:
        return None  # without a match on these, the file is read whole: no SHA-256 computed for nothing
    return entry.get("format") if entry.get("sha256") == sha256_file(path) else None


def remember_verified(path: Path, fmt: str, sha256: str) -> None:
    """Best effort: a cache that cannot be written only costs the next check its time."""
    name, size, mtime = _key(path)
    memory = _memory()
    memory[name] = {"size": size, "mtime_ns": mtime, "sha256": sha256, "format": fmt, "at": time.time()}
    recent = dict(sorted(memory.items(), key=lambda kv: kv[1].get("at", 0) if isinstance(kv[1], dict) else 0)[-REMEMBERED:])
    try:
        directory = cache_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = directory / f".{MEMORY_FILE}.{os.getpid()}"
        with open(create_new(partial), "w") as f:
            f.write(json.dumps(recent))
        partial.replace(directory / MEMORY_FILE)
    except OSError:
        pass


def check_backups(env: Environment, now: float | None = None) -> Finding:
    if not env.app.backup_dir:
        raise StepFailed(STEP, "BACKUP_DIR is not set")
    directory = Path(env.app.backup_dir)
    if not directory.is_dir():
        raise StepFailed(STEP, f"BACKUP_DIR {directory} is not a directory")
    latest = newest_backup(directory)
    if latest is None:
        raise StepFailed(STEP, f"no backup in {directory}")
    size = backup_size(latest)
    if size == 0:
        raise StepFailed(STEP, f"newest backup {latest.name} is empty")
    age_h = ((now if now is not None else time.time()) - latest.stat().st_mtime) / 3600
    limit = env.target.backup_max_age_hours
    if age_h > limit:
        raise StepFailed(STEP, f"newest backup {latest.name} is {age_h:.1f} h old, older than {limit:g} h")
    said = f"{latest.name}: {{}}, {size} bytes, {age_h:.1f} h old"
    if latest.is_file() and (fmt := verified_before(latest)):
        return Finding(detail=said.format(fmt) + ", read whole before (its SHA-256 is unchanged)")
    try:
        passphrase = env.app.backup_passphrase.get_secret_value() if env.app.backup_passphrase else None
        fmt = read_whole(latest, passphrase, env.target.backup_timeout_s, pg_tools(env, STEP, server=False))
    except BackupUnreadable as exc:
        raise StepFailed(STEP, f"newest backup {latest.name} is unreadable: {exc}") from None
    if latest.is_file():
        # An encrypted backup's checksum was just verified against the file: it is its SHA-256.
        sha = recorded_checksum(latest) if dump_format(latest) == "encrypted" else sha256_file(latest)
        remember_verified(latest, fmt, sha)
    return Finding(detail=said.format(fmt) + ", read whole")


# No task time limit of its own: pg_restore is stopped after RELEASE_BACKUP_TIMEOUT_S.
backups_task = runbook_task(STEP, timeout_s=None)(check_backups)
