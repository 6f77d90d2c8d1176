"""Backups encrypted at rest with BACKUP_PASSPHRASE, against a real PostgreSQL:
written by pg_dump through the encryptor, read whole through pg_restore, and
refused when tampered with, truncated, or opened with the wrong passphrase."""

import os
import stat
from pathlib import Path

import pytest

from blocks.envfile import parse_env_file
from sandbox.postgres import Cluster
from smartrelease.errors import StepFailed
from tasks.backup_crypto import MAGIC, decrypt_stream, sha256_file
from tasks.backup_files import BackupError, BackupUnreadable, dump_database_encrypted, read_whole
from tasks.backups import check_backups
from tests.conftest import BACKUP_PASSPHRASE, DB_NAME, DB_PASSWORD, DB_USER


def encrypted_backup(cluster: Cluster, directory: Path, name: str = "prod-1.0.0.dump.enc") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    dump_database_encrypted("127.0.0.1", cluster.port, DB_USER, DB_PASSWORD, DB_NAME, target, BACKUP_PASSPHRASE)
    return target


def test_written_encrypted_with_a_checksum_and_read_whole(pg, tmp_path):
    path = encrypted_backup(pg, tmp_path)
    data = path.read_bytes()
    assert data.startswith(MAGIC) and b"PGDMP" not in data and b"SequelizeMeta" not in data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / (path.name + ".sha256")).read_text() == f"{sha256_file(path)}  {path.name}\n"
    assert b"".join(decrypt_stream(path, BACKUP_PASSPHRASE)).startswith(b"PGDMP")
    assert read_whole(path, BACKUP_PASSPHRASE) == "custom, encrypted"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left


def test_a_tampered_file_is_refused_by_its_checksum(pg, tmp_path):
    path = encrypted_backup(pg, tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BackupUnreadable, match="does not match its recorded SHA-256"):
        read_whole(path, BACKUP_PASSPHRASE)
    # Even with the checksum file forged to match, the cipher's tag refuses it.
    (tmp_path / (path.name + ".sha256")).write_text(f"{sha256_file(path)}  {path.name}\n")
    with pytest.raises(BackupUnreadable, match="fails authentication"):
        read_whole(path, BACKUP_PASSPHRASE)


def test_truncated_wrong_passphrase_and_missing_passphrase(pg, tmp_path):
    path = encrypted_backup(pg, tmp_path)
    with pytest.raises(BackupUnreadable, match="fails authentication: wrong BACKUP_PASSPHRASE") as wrong:
        read_whole(path, "not-the-passphrase")
    assert BACKUP_PASSPHRASE not in str(wrong.value)
    with pytest.raises(BackupUnreadable, match="BACKUP_PASSPHRASE is not set"):
        read_whole(path, None)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BackupUnreadable, match="does not match its recorded SHA-256"):
        read_whole(path, BACKUP_PASSPHRASE)


def test_a_failing_pg_dump_leaves_nothing_behind(own_pg, tmp_path):
    own_pg.stop()
    with pytest.raises(BackupError, match="pg_dump failed"):
        encrypted_backup(own_pg, tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []


def test_preflight_backups_check_decrypts(write_env, pg):
    env = parse_env_file(write_env())
    newest = encrypted_backup(pg, Path(env.app.backup_dir))
    assert check_backups(env).detail.startswith(f"{newest.name}: custom, encrypted")
    with newest.open("r+b") as f:
        f.seek(100)
        f.write(b"\0" * 16)
    with pytest.raises(StepFailed) as failed:
        check_backups(env)
    assert failed.value.reason == f"newest backup {newest.name} is unreadable: {newest.name} does not match its recorded SHA-256 (tampered or damaged): refused"
