"""Finding and reading logical backups: whatever wrote them (the runbook's
full-backup.sh writes pg_dump archives), a backup counts only if it reads whole."""

import gzip
import subprocess
import zlib
from pathlib import Path

from tasks.backup_crypto import CHECKSUM_SUFFIX, MAGIC, BackupIntegrityError, decrypt_stream, encrypt_stream, verify_checksum

PG_RESTORE = "pg_restore"
READ_TIMEOUT_S = 900
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


def read_whole(path: Path, passphrase: str | None = None) -> str:
    """Read every byte of a backup the way a restore would. Returns its format;
    raises BackupUnreadable naming what is wrong."""
    fmt = dump_format(path)
    if fmt == "encrypted":
        return _read_encrypted(path, passphrase)
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


def _read_encrypted(path: Path, passphrase: str | None) -> str:
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
    try:
        chunks = decrypt_stream(path, passphrase)
        for chunk in chunks:
            if chunk and not chunk.startswith(b"PGDMP"):
                # Garbage from an intact file: most likely the wrong passphrase, which
                # only the tag at the end can tell for sure; read on to it.
                proc.kill()
                for _ in chunks:
                    pass
                raise BackupUnreadable("decrypted, but not a pg_dump custom archive")
            if chunk:
                proc.stdin.write(chunk)
                break
        for chunk in chunks:
            proc.stdin.write(chunk)
    except BackupIntegrityError as exc:
        proc.kill()
        raise BackupUnreadable(str(exc)) from None
    except BrokenPipeError:
        pass  # pg_restore stopped reading: its exit status below says why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
    try:
        err = proc.stderr.read()
        proc.wait(timeout=READ_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise BackupUnreadable(f"reading it took longer than {READ_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [l for l in err.decode(errors="replace").strip().splitlines() if l.strip()]
        raise BackupUnreadable(f"pg_restore cannot read it: {lines[0] if lines else 'exit ' + str(proc.returncode)}")
    return "custom, encrypted"


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
                            target: Path, passphrase: str) -> str:
    """pg_dump custom format piped straight into the encryptor; returns the SHA-256
    recorded beside `target`. Nothing is left behind when pg_dump fails."""
    cmd = ["pg_dump", "--format=custom", "-h", host, "-p", str(port), "-d", dbname, *(["-U", user] if user else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=pg_environment(password))

    def pg_dump_succeeded() -> None:
        _, err = proc.communicate(timeout=READ_TIMEOUT_S)
        if proc.returncode != 0:
            lines = [l for l in err.decode(errors="replace").splitlines() if l.strip()]
            raise BackupError(f"pg_dump failed: {lines[0] if lines else proc.returncode}")

    try:
        return encrypt_stream(iter(lambda: proc.stdout.read(1 << 20), b""), target, passphrase, pg_dump_succeeded)
    except subprocess.TimeoutExpired:
        raise BackupError(f"pg_dump took longer than {READ_TIMEOUT_S} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def dump_database(host: str, port: int, user: str | None, password: str | None, dbname: str, target: Path) -> Path:
    """pg_dump custom format to `target`, written under a hidden name and renamed
    when complete, so a reader never mistakes a partial dump for a backup."""
    partial = target.with_name(f".{target.name}.partial")
    env = pg_environment(password)
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
