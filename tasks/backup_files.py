"""Finding and reading logical backups: whatever wrote them (the runbook's
full-backup.sh writes pg_dump archives), a backup counts only if it reads whole."""

import gzip
import subprocess
import zlib
from pathlib import Path

from smartrelease.errors import CommandFailed
from smartrelease.process import Command, Deadline, failure, run
from tasks.backup_crypto import CHECKSUM_SUFFIX, MAGIC, BackupIntegrityError, decrypt_stream, encrypt_stream, verify_checksum

PG_RESTORE = "pg_restore"
# RELEASE_BACKUP_TIMEOUT_S's default: how long one pg_dump, pg_restore or psql may run.
BACKUP_TIMEOUT_S = 1800
PLAIN_TRAILER = b"-- PostgreSQL database dump complete"


class BackupError(Exception):
    pass


class BackupUnreadable(BackupError):
    pass


def newest_backup(directory: Path) -> Path | None:
    """The most recently modified backup: a file, or a pg_dump directory archive.
    Hidden files (probes, partial writes) and checksum files are not backups."""
    candidates = [
        p for p in directory.iterdir()
        if not p.name.startswith(".") and not p.name.endswith(CHECKSUM_SUFFIX)
        and (p.is_file() or (p / "toc.dat").is_file())
    ]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def backup_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size


def dump_format(path: Path) -> str:
    if path.is_dir():
        return "directory"
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith(MAGIC):
        return "encrypted"
    if head.startswith(b"PGDMP"):
        return "custom"
    if head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return "plain"


def read_whole(path: Path, passphrase: str | None = None, timeout_s: float = BACKUP_TIMEOUT_S) -> str:
    """Read every byte of a backup the way a restore would. Returns its format;
    raises BackupUnreadable naming what is wrong."""
    fmt = dump_format(path)
    if fmt == "encrypted":
        return _read_encrypted(path, passphrase, timeout_s)
    if fmt in ("custom", "tar", "directory"):
        # --list reads only the table of contents and passes on a truncated file;
        # writing the whole script to /dev/null reads every data block.
        try:
            run(Command((PG_RESTORE, "--file=/dev/null", str(path)), timeout_s=timeout_s))
        except CommandFailed as exc:
            raise BackupUnreadable(str(exc)) from None
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


def _read_encrypted(path: Path, passphrase: str | None, timeout_s: float) -> str:
    """Checksum first, then decrypt into `pg_restore --file=/dev/null` through a
    pipe (plain text never touches the disk); the GCM tag is checked at the end."""
    if not passphrase:
        raise BackupUnreadable("it is encrypted and BACKUP_PASSPHRASE is not set")
    try:
        verify_checksum(path)
        proc = subprocess.Popen([PG_RESTORE, "--file=/dev/null"], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except BackupIntegrityError as exc:
        raise BackupUnreadable(str(exc)) from None
    except FileNotFoundError:
        raise BackupUnreadable(f"{PG_RESTORE} is not installed") from None
    with Deadline(timeout_s, proc) as deadline:
        try:
            _feed_decrypted(path, passphrase, proc)
        except BackupUnreadable:
            proc.kill()
            proc.wait()
            raise
        err = proc.stderr.read()
        proc.wait()
    if deadline.expired:
        raise BackupUnreadable(f"reading it took longer than {timeout_s:g} s (RELEASE_BACKUP_TIMEOUT_S)")
    if proc.returncode != 0:
        raise BackupUnreadable(str(failure(PG_RESTORE, proc.returncode, err)))
    return "custom, encrypted"


def _feed_decrypted(path: Path, passphrase: str, proc: subprocess.Popen) -> None:
    """Decrypt `path` into proc's standard input, which is closed after."""
    try:
        chunks = decrypt_stream(path, passphrase)
        for chunk in chunks:
            if chunk and not chunk.startswith(b"PGDMP"):
                # Garbage from an intact file: most likely the wrong passphrase, which
                # only the tag at the end can tell for sure; read on to it.
                for _ in chunks:
                    pass
                raise BackupUnreadable("decrypted, but not a pg_dump custom archive")
            if chunk:
                proc.stdin.write(chunk)
                break
        for chunk in chunks:
            proc.stdin.write(chunk)
    except BackupIntegrityError as exc:
        raise BackupUnreadable(str(exc)) from None
    except BrokenPipeError:
        pass  # pg_restore stopped reading: its exit status says why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass


def _require_trailer(tail: bytes) -> None:
    if PLAIN_TRAILER not in tail:
        raise BackupUnreadable("plain SQL dump lacks pg_dump's closing line (truncated, or not a pg_dump file)")


def pg_environment(password: str | None) -> dict[str, str]:
    """The environment for PostgreSQL's client programs: the password goes here, never in argv."""
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    if password:
        env["PGPASSWORD"] = password  # the environment, never argv
    return env


def dump_database_encrypted(host: str, port: int, user: str | None, password: str | None, dbname: str,
                            target: Path, passphrase: str, timeout_s: float = BACKUP_TIMEOUT_S) -> str:
    """pg_dump custom format piped straight into the encryptor; returns the SHA-256
    recorded beside `target`. Nothing is left behind when pg_dump fails."""
    cmd = ["pg_dump", "--format=custom", "-h", host, "-p", str(port), "-d", dbname, *(["-U", user] if user else [])]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pg_environment(password))
    except FileNotFoundError:
        raise BackupError("pg_dump is not installed (not found on PATH)") from None
    deadline = Deadline(timeout_s, proc)

    def pg_dump_succeeded() -> None:
        _, err = proc.communicate()
        if deadline.expired:
            raise BackupError(f"pg_dump took longer than {timeout_s:g} s (RELEASE_BACKUP_TIMEOUT_S)")
        if proc.returncode != 0:
            raise BackupError(str(failure("pg_dump", proc.returncode, err)))

    try:
        with deadline:
            return encrypt_stream(iter(lambda: proc.stdout.read(1 << 20), b""), target, passphrase, pg_dump_succeeded)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def dump_database(host: str, port: int, user: str | None, password: str | None, dbname: str, target: Path,
                  timeout_s: float = BACKUP_TIMEOUT_S) -> Path:
    """pg_dump custom format to `target`, written under a hidden name and renamed
    when complete, so a reader never mistakes a partial dump for a backup."""
    partial = target.with_name(f".{target.name}.partial")
    cmd = ["pg_dump", "--format=custom", f"--file={partial}", "-h", host, "-p", str(port), "-d", dbname]
    if user:
        cmd += ["-U", user]
    try:
        run(Command(tuple(cmd), timeout_s=timeout_s, env=pg_environment(password)))
    except CommandFailed as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(str(exc)) from None
    partial.rename(target)
    return target
