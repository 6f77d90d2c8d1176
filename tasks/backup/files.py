"""Finding and reading logical backups: whatever wrote them (the runbook's
full-backup.sh writes pg_dump archives), a backup counts only if it reads whole."""

import re
import secrets
import gzip
import subprocess
import threading
import zlib
from pathlib import Path

from smartrelease.errors import CommandFailed
from smartrelease.process import Command, Deadline, failure, run, start
from smartrelease.tasks.backup.crypto import CHECKSUM_SUFFIX, MAGICS, BackupIntegrityError, decrypt_stream, encrypt_stream, verify_checksum
from smartrelease.tasks.pg_client import HostTools, PgTools

PG_RESTORE = "pg_restore"
# RELEASE_BACKUP_TIMEOUT_S's default: how long one pg_dump, pg_restore or psql may run.
BACKUP_TIMEOUT_S = 1800
PLAIN_TRAILER = b"-- PostgreSQL database dump complete"


class BackupError(Exception):
    pass


class BackupUnreadable(BackupError):
    pass


class ChecksumFailed(BackupUnreadable):
    """The file does not match its recorded SHA-256, or has none to match."""


class DecryptionFailed(BackupUnreadable):
    """The file does not decrypt: wrong BACKUP_PASSPHRASE, altered, or not a backup of ours."""


class RestoreFailed(BackupError):
    """pg_restore or psql refused the backup's content."""


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
    if head.startswith(MAGICS):
        return "encrypted"
    if head.startswith(b"PGDMP"):
        return "custom"
    if head[257:262] == b"ustar":
        return "tar"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return "plain"


def read_whole(path: Path, passphrase: str | None = None, timeout_s: float = BACKUP_TIMEOUT_S,
               tools: PgTools | None = None) -> str:
    """Read every byte of a backup the way a restore would. Returns its format;
    raises BackupUnreadable naming what is wrong. `tools` is where pg_restore runs
    (the database service's own, for an archive a newer pg_dump wrote); default: this host."""
    tools = tools or HostTools()
    fmt = dump_format(path)
    if fmt == "encrypted":
        return _read_encrypted(path, passphrase, timeout_s, tools)
    if fmt in ("custom", "tar", "directory"):
        # --list reads only the table of contents and passes on a truncated file;
        # writing the whole script to /dev/null reads every data block.
        if fmt == "directory" or isinstance(tools, HostTools):
            command = HostTools().command(PG_RESTORE, "--file=/dev/null", str(path), connect=False, timeout_s=timeout_s)
            try:
                run(command)
            except CommandFailed as exc:
                raise BackupUnreadable(str(exc)) from None
        else:  # a file streams into the container's pg_restore
            with path.open("rb") as f:
                _pipe_into_pg_restore(iter(lambda: f.read(1 << 20), b""), tools, timeout_s)
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


def _read_encrypted(path: Path, passphrase: str | None, timeout_s: float, tools: PgTools) -> str:
    """Checksum first, then decrypt into `pg_restore --file=/dev/null` through a
    pipe (plain text never touches the disk); the GCM tag is checked at the end."""
    if not passphrase:
        raise BackupUnreadable("it is encrypted and BACKUP_PASSPHRASE is not set")
    try:
        verify_checksum(path)
    except BackupIntegrityError as exc:
        raise ChecksumFailed(str(exc)) from None
    _pipe_into_pg_restore(_decrypted_archive(path, passphrase), tools, timeout_s)
    return "custom, encrypted"


def _decrypted_archive(path: Path, passphrase: str):
    """The decrypted chunks of `path`; BackupUnreadable when it is not a pg_dump
    custom archive (most likely the wrong passphrase, which only the tag can tell
    for sure: read on to it) or fails its tag."""
    try:
        chunks = decrypt_stream(path, passphrase)
        for chunk in chunks:
            if chunk and not chunk.startswith(b"PGDMP"):
                for _ in chunks:
                    pass
                raise DecryptionFailed("decrypted, but not a pg_dump custom archive")
            if chunk:
                yield chunk
                break
        yield from chunks
    except BackupIntegrityError as exc:
        raise DecryptionFailed(str(exc)) from None


def _pipe_into_pg_restore(chunks, tools: PgTools, timeout_s: float) -> None:
    """`pg_restore --file=/dev/null` reading `chunks` on its standard input."""
    command = tools.command(PG_RESTORE, "--file=/dev/null", connect=False, timeout_s=timeout_s)
    _pipe_into(command, chunks, timeout_s, BackupUnreadable, "reading it")


def _pipe_into(command: Command, chunks, timeout_s: float, error: type[BackupError], doing: str) -> None:
    """Run `command` reading `chunks` on its standard input; `error` names why it failed.
    A BackupUnreadable raised by `chunks` (a failed decryption) stops it and goes on up."""
    try:
        proc = start(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    except CommandFailed as exc:
        raise error(str(exc)) from None
    err = bytearray()
    # Read standard error as it comes: a program that writes much of it while it is fed must not block.
    reader = threading.Thread(target=lambda: err.extend(proc.stderr.read()), daemon=True)
    reader.start()
    with Deadline(timeout_s, proc) as deadline:
        try:
            _feed(chunks, proc)
        except BackupUnreadable:
            proc.kill()
            proc.wait()
            raise
        proc.wait()
    reader.join(timeout=10)
    if deadline.expired:
        raise error(f"{doing} took longer than {timeout_s:g} s (RELEASE_BACKUP_TIMEOUT_S)")
    if proc.returncode != 0:
        raise error(str(failure(command.name, proc.returncode, bytes(err))))


# pg_restore into an empty database (a drill's scratch one): objects belong to whoever
# restores them, and the first error stops it.
RESTORE_ARGS = ("--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction")


def restore_into(path: Path, passphrase: str | None, tools: PgTools, timeout_s: float = BACKUP_TIMEOUT_S) -> str:
    """Restore the backup at `path`, in any format read_whole knows, into the database
    `tools` connect to, which must be empty (never the live one: see tasks/drill.py).
    Returns its format. The checksum is the caller's to check first; raises
    DecryptionFailed, or RestoreFailed when pg_restore or psql refuses the content."""
    fmt = dump_format(path)
    if fmt == "encrypted":
        if not passphrase:
            raise DecryptionFailed("it is encrypted and BACKUP_PASSPHRASE is not set")
        chunks, program = _decrypted_archive(path, passphrase), PG_RESTORE
    elif fmt == "directory":
        if not isinstance(tools, HostTools):
            raise RestoreFailed("a directory archive cannot be streamed into the database service's container: "
                                "restore it with this host's pg_restore (no RELEASE_DATABASE_SERVICE)")
        command = tools.command(PG_RESTORE, *RESTORE_ARGS, str(path), timeout_s=timeout_s)
        _pipe_into(command, iter(()), timeout_s, RestoreFailed, "the restore")
        return fmt
    elif fmt in ("custom", "tar"):
        chunks, program = _file_chunks(path), PG_RESTORE
    else:  # plain SQL, perhaps gzipped: psql runs it, its meta-commands refused
        chunks, program = restricted(_gunzipped(path) if fmt == "gzip" else _file_chunks(path)), "psql"
    args = RESTORE_ARGS if program == PG_RESTORE else ("-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                                                       "-f", "-")
    _pipe_into(tools.command(program, *args, timeout_s=timeout_s), chunks, timeout_s, RestoreFailed, "the restore")
    return {"encrypted": "custom, encrypted", "gzip": "plain SQL, gzip", "plain": "plain SQL"}.get(fmt, fmt)


_PG_DUMP_RESTRICT = re.compile(rb"\\(?:un)?restrict ([A-Za-z0-9]+)\r?")


def restricted(chunks, key: str | None = None):
    """A plain SQL script as psql may run it from a backup directory anyone with write
    access there could have filled: behind `\\restrict <key>` (psql 15.14 and later),
    a key the script cannot know, so every meta-command in it is refused: `\\!` would
    run a shell on this host, `\\c` reach the live database. pg_dump's own `\\restrict`
    line and the `\\unrestrict` with its key are dropped (they would fail, as nested).
    An older psql refuses the first line, and the restore fails, named, having run nothing."""
    key = key or secrets.token_hex(16)
    yield f"\\restrict {key}\n".encode()
    pending, dumps_key = b"", None

    def kept(line: bytes) -> bool:
        nonlocal dumps_key
        found = _PG_DUMP_RESTRICT.fullmatch(line)
        if found is None:
            return True
        if dumps_key is None and line.startswith(b"\\restrict"):
            dumps_key = found.group(1)
            return False
        return found.group(1) != dumps_key or not line.startswith(b"\\unrestrict")

    for chunk in chunks:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        yield b"".join(line + b"\n" for line in lines if kept(line))
    if pending and kept(pending):
        yield pending


def _file_chunks(path: Path):
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk


def _gunzipped(path: Path):
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                yield chunk
    except (EOFError, OSError, zlib.error) as exc:
        raise BackupUnreadable(f"gzip stream is damaged or truncated ({type(exc).__name__})") from None


def _feed(chunks, proc: subprocess.Popen) -> None:
    """Write `chunks` into proc's standard input, which is closed after."""
    try:
        for chunk in chunks:
            proc.stdin.write(chunk)
    except BrokenPipeError:
        pass  # the program stopped reading: its exit status says why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass


def _require_trailer(tail: bytes) -> None:
    if PLAIN_TRAILER not in tail:
        raise BackupUnreadable("plain SQL dump lacks pg_dump's closing line (truncated, or not a pg_dump file)")


def dump_database_encrypted(tools: PgTools, target: Path, passphrase: str, timeout_s: float = BACKUP_TIMEOUT_S) -> str:
    """pg_dump custom format piped straight into the encryptor; returns the SHA-256
    recorded beside `target`. Nothing is left behind when pg_dump fails."""
    command = tools.command("pg_dump", "--format=custom", timeout_s=timeout_s)
    try:
        proc = start(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except CommandFailed as exc:
        raise BackupError(str(exc)) from None
    deadline = Deadline(timeout_s, proc)

    def pg_dump_succeeded() -> None:
        _, err = proc.communicate()
        if deadline.expired:
            raise BackupError(f"{command.name} took longer than {timeout_s:g} s (RELEASE_BACKUP_TIMEOUT_S)")
        if proc.returncode != 0:
            raise BackupError(str(failure(command.name, proc.returncode, err)))

    try:
        with deadline:
            return encrypt_stream(iter(lambda: proc.stdout.read(1 << 20), b""), target, passphrase, pg_dump_succeeded)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
