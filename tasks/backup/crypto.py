"""Backups encrypted at rest with BACKUP_PASSPHRASE: AES-256-GCM (authenticated)
from `cryptography`, the key derived with scrypt, streamed so a dump of any size
never sits on disk in plain text.

File layout: MAGIC | scrypt's log2(N), r, p (a byte each) | salt (16) | nonce (12) |
ciphertext | GCM tag (16). Files of the first format (MAGIC_V1: no parameters, which
were N=2^15, r=8, p=1) are still read.
Beside each file, `<name>.sha256` in `sha256sum` format: a tampered or damaged
file is refused by its checksum before anything reads it.
"""

import functools
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from smartrelease.files import create_new

MAGIC = b"SRBK2\n"
MAGIC_V1 = b"SRBK1\n"
MAGICS = (MAGIC, MAGIC_V1)
# OWASP's scrypt figure (2025): N=2^17, r=8, p=1: about 0.25 s and 128 MiB here.
SCRYPT = (17, 8, 1)
SCRYPT_V1 = (15, 8, 1)
# What a file may ask of a reader: a planted header must not make it derive for hours.
SCRYPT_MAX = (20, 16, 4)
SALT, NONCE, TAG = 16, 12, 16
CHUNK = 1 << 20
CHECKSUM_SUFFIX = ".sha256"


class BackupIntegrityError(Exception):
    """Wrong passphrase, tampered or truncated file, or checksum mismatch."""


@functools.lru_cache(maxsize=16)
def _key(passphrase: str, salt: bytes, params: tuple[int, int, int] = SCRYPT) -> bytes:
    # scrypt's cost makes guessing a passphrase from a stolen backup slow. A process
    # that writes a backup reads it back and may restore it: the key of one
    # (passphrase, salt) is derived once. (The process holds the passphrase already; a
    # salt is new for every file.)
    log2n, r, p = params
    return Scrypt(salt=salt, length=32, n=2**log2n, r=r, p=p).derive(passphrase.encode())


def _header(f, name: str) -> tuple[tuple[int, int, int], bytes, bytes]:
    """(scrypt's parameters, salt, nonce) from an encrypted backup's start."""
    magic = f.read(len(MAGIC))
    if magic == MAGIC_V1:
        params = SCRYPT_V1
    elif magic == MAGIC:
        params = tuple(f.read(3))
        if len(params) != 3 or any(not 0 < v <= most for v, most in zip(params, SCRYPT_MAX)):
            raise BackupIntegrityError(f"{name} asks for scrypt parameters {params} beyond {SCRYPT_MAX}: refused")
    else:
        raise BackupIntegrityError(f"{name} is not an encrypted backup")
    return params, f.read(SALT), f.read(NONCE)


def encrypt_stream(chunks: Iterable[bytes], target: Path, passphrase: str,
                   before_commit: Callable[[], None] | None = None) -> str:
    """Encrypt `chunks` into `target` (written under a hidden name, renamed when
    complete, mode 0600), write its checksum file, and return the SHA-256.
    `before_commit` may raise to abandon the file (the producer failed)."""
    salt, nonce = os.urandom(SALT), os.urandom(NONCE)
    encryptor = Cipher(algorithms.AES(_key(passphrase, salt, SCRYPT)), modes.GCM(nonce)).encryptor()
    partial = target.with_name(f".{target.name}.partial")
    sidecar = target.with_name(target.name + CHECKSUM_SUFFIX)
    partial_sidecar = sidecar.with_name(f".{sidecar.name}.partial")
    digest = hashlib.sha256()
    try:
        with open(create_new(partial), "wb") as out:
            def write(data: bytes) -> None:
                out.write(data)
                digest.update(data)
            write(MAGIC + bytes(SCRYPT) + salt + nonce)
            for chunk in chunks:
                write(encryptor.update(chunk))
            write(encryptor.finalize() + encryptor.tag)
            out.flush()
            os.fsync(out.fileno())
        if before_commit:
            before_commit()
        # The checksum file is written before either is renamed (renaming needs no
        # space): a full disk leaves neither, never a backup without its checksum.
        checksum = digest.hexdigest()
        with open(create_new(partial_sidecar), "w") as sums:
            sums.write(f"{checksum}  {target.name}\n")
    except BaseException:
        partial.unlink(missing_ok=True)
        partial_sidecar.unlink(missing_ok=True)
        raise
    partial.rename(target)
    partial_sidecar.rename(sidecar)
    return checksum


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def recorded_checksum(path: Path) -> str | None:
    sidecar = path.with_name(path.name + CHECKSUM_SUFFIX)
    if not sidecar.is_file():
        return None
    fields = sidecar.read_text().split()
    return fields[0] if fields else ""


def verify_checksum(path: Path) -> str:
    """The file's SHA-256, after checking it against its checksum file."""
    recorded = recorded_checksum(path)
    if recorded is None:
        raise BackupIntegrityError(f"{path.name} has no {CHECKSUM_SUFFIX} file: its integrity cannot be checked")
    actual = sha256_file(path)
    if actual != recorded:
        raise BackupIntegrityError(f"{path.name} does not match its recorded SHA-256 (tampered or damaged): refused")
    return actual


def decrypt_stream(path: Path, passphrase: str) -> Iterator[bytes]:
    """Plain-text chunks of an encrypted backup. The GCM tag is checked at the end:
    a consumer must treat everything as unverified until the iterator finishes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        params, salt, nonce = _header(f, path.name)
        header = f.tell()
        if len(nonce) != NONCE or size < header + TAG:
            raise BackupIntegrityError(f"{path.name} is too short to be an encrypted backup")
        f.seek(size - TAG)
        tag = f.read(TAG)
        f.seek(header)
        decryptor = Cipher(algorithms.AES(_key(passphrase, salt, params)), modes.GCM(nonce, tag)).decryptor()
        remaining = size - header - TAG
        while remaining:
            chunk = f.read(min(CHUNK, remaining))
            remaining -= len(chunk)
            yield decryptor.update(chunk)
        try:
            yield decryptor.finalize()
        except InvalidTag:
            raise BackupIntegrityError(f"{path.name} fails authentication: wrong BACKUP_PASSPHRASE, or the file was altered") from None
