"""Finding and reading logical backups: whatever wrote them (the runbook's
full-backup.sh writes pg_dump archives), a backup counts only if it reads whole."""

import gzip
import subprocess
import zlib
from pathlib import Path

PG_RESTORE = "pg_restore"
READ_TIMEOUT_S = 900
PLAIN_TRAILER = b"-- PostgreSQL database dump complete"


class BackupError(Exception):
    pass


class BackupUnreadable(BackupError):
    pass


def newest_backup(directory: Path) -> Path | None:
    """The most recently modified backup: a file, or a pg_dump directory archive.
    Hidden files (probes, partial writes) are not backups."""
    candidates = [
        p for p in directory.iterdir()
        if not p.name.startswith(".") and (p.is_file() or (p / "toc.dat").is_file())
    ]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def backup_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def dump_format(path: Path) -> str:
    if path.is_dir():
        return "directory"
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith(b"PGDMP"):
        return "custom"
    if head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return "plain"


def read_whole(path: Path) -> str:
    """Read every byte of a backup the way a restore would. Returns its format;
    raises BackupUnreadable naming what is wrong."""
    fmt = dump_format(path)
    if fmt in ("custom", "tar", "directory"):
        # --list reads only the table of contents and passes on a truncated file;
        # writing the whole script to /dev/null reads every data block.
        try:
            proc = subprocess.run(
                [PG_RESTORE, "--file=/dev/null", str(path)],
                capture_output=True, text=True, timeout=READ_TIMEOUT_S,
            )
        except FileNotFoundError:
            raise BackupUnreadable(f"{PG_RESTORE} is not installed") from None
        except subprocess.TimeoutExpired:
            raise BackupUnreadable(f"reading it took longer than {READ_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
            raise BackupUnreadable(f"pg_restore cannot read it: {lines[0] if lines else 'exit ' + str(proc.returncode)}")
        return fmt
    if fmt == "gzip":
        tail = b""
        try:
            with gzip.open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    tail = (tail + chunk)[-4096:]
        except (EOFError, OSError, zlib.error) as exc:
            raise BackupUnreadable(f"gzip stream is damaged or truncated ({type(exc).__name__})") from None
        _require_trailer(tail)
        return "plain SQL, gzip"
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        _require_trailer(f.read())
    return "plain SQL"


def _require_trailer(tail: bytes) -> None:
    if PLAIN_TRAILER not in tail:
        raise BackupUnreadable("plain SQL dump lacks pg_dump's closing line (truncated, or not a pg_dump file)")


def dump_database(host: str, port: int, user: str | None, password: str | None, dbname: str, target: Path) -> Path:
    """pg_dump custom format to `target`, written under a hidden name and renamed
    when complete, so a reader never mistakes a partial dump for a backup."""
    partial = target.with_name(f".{target.name}.partial")
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    if password:
        env["PGPASSWORD"] = password  # the environment, never argv
    cmd = ["pg_dump", "--format=custom", f"--file={partial}", "-h", host, "-p", str(port), "-d", dbname]
    if user:
        cmd += ["-U", user]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=READ_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump took longer than {READ_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        raise BackupError(f"pg_dump failed: {lines[0] if lines else proc.returncode}")
    partial.rename(target)
    return target
