"""Backups encrypted at rest with BACKUP_PASSPHRASE, against a real PostgreSQL:
written by pg_dump through the encryptor, read whole through pg_restore, and
refused when tampered with, truncated, or opened with the wrong passphrase."""

import os
import stat
from pathlib import Path

import psycopg
import pytest

from smartrelease.blocks.app_environment import AppEnvironment
from smartrelease.blocks.envfile import Environment, parse_env_file
from smartrelease.blocks.release_target import ReleaseTarget
from smartrelease.local_postgres import Cluster
from smartrelease.errors import StepFailed
from smartrelease.tasks.backup.crypto import MAGIC, decrypt_stream, sha256_file
from smartrelease.tasks.backup.files import BackupError, BackupUnreadable, dump_database_encrypted, read_whole
from smartrelease.tasks.backup.latest import check_backups
from smartrelease.tasks.restore import restore_database
from tests.conftest import BACKUP_PASSPHRASE, DB_NAME, DB_PASSWORD, DB_USER, host_tools


def encrypted_backup(cluster: Cluster, directory: Path, name: str = "prod-1.0.0.dump.enc") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    dump_database_encrypted(host_tools(cluster), target, BACKUP_PASSPHRASE)
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


def test_a_backup_read_whole_once_is_not_read_again_until_its_bytes_change(write_env, pg, tmp_path, monkeypatch):
    monkeypatch.setenv("SMARTRELEASE_CACHE", str(tmp_path / "cache"))
    env = parse_env_file(write_env())
    newest = encrypted_backup(pg, Path(env.app.backup_dir))
    assert check_backups(env).detail.endswith(", read whole")
    again = check_backups(env).detail
    assert again.startswith(f"{newest.name}: custom, encrypted") and again.endswith("read whole before (its SHA-256 is unchanged)")
    # Altered in place with its size and modification time kept, and its checksum file
    # forged to match: the SHA-256 differs from the one verified, so it is read whole
    # again, and the cipher's tag refuses it.
    before = newest.stat()
    with newest.open("r+b") as f:
        f.seek(200)
        f.write(b"\1" * 8)
    os.utime(newest, ns=(before.st_atime_ns, before.st_mtime_ns))
    (newest.parent / (newest.name + ".sha256")).write_text(f"{sha256_file(newest)}  {newest.name}\n")
    with pytest.raises(StepFailed) as failed:
        check_backups(env)
    assert "fails authentication" in failed.value.reason
    # A cache that cannot be written only costs time: the check still reads it whole.
    monkeypatch.setenv("SMARTRELEASE_CACHE", "/proc/no-such-dir")
    fresh = encrypted_backup(pg, Path(env.app.backup_dir), "prod-1.0.1.dump.enc")
    for _ in range(2):
        detail = check_backups(env).detail
        assert detail.startswith(fresh.name) and detail.endswith(", read whole")


def _database(cluster: Cluster) -> dict:
    """Every table in public with its columns and rows: equal means equal databases."""
    with psycopg.connect(cluster.dsn(DB_USER, DB_PASSWORD, DB_NAME)) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]
        return {t: (conn.execute("SELECT column_name, data_type FROM information_schema.columns "
                                 "WHERE table_name = %s ORDER BY 1", (t,)).fetchall(),
                    conn.execute(f'SELECT * FROM "{t}" ORDER BY 1').fetchall()) for t in tables}


def _app_env(cluster: Cluster) -> Environment:
    return Environment(name="restore", target=ReleaseTarget(), app=AppEnvironment(
        database_url=cluster.dsn(DB_USER, DB_PASSWORD, DB_NAME), backup_passphrase=BACKUP_PASSPHRASE))


def test_restore_makes_the_database_equal_the_backup_in_one_transaction(own_pg, tmp_path):
    with psycopg.connect(own_pg.dsn(DB_USER, DB_PASSWORD, DB_NAME), autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id SERIAL PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO accounts (name) VALUES ('kept'), ('also kept')")
    at_backup = _database(own_pg)
    path = encrypted_backup(own_pg, tmp_path)
    recorded = sha256_file(path)  # as the plan and the history record it when it is taken
    with psycopg.connect(own_pg.dsn(DB_USER, DB_PASSWORD, DB_NAME), autocommit=True) as conn:
        conn.execute("CREATE TABLE ledgers (id INT)")  # a newer migration's table
        conn.execute("ALTER TABLE accounts ADD COLUMN code TEXT")
        conn.execute("INSERT INTO accounts (name) VALUES ('written later')")
    changed = _database(own_pg)

    # Altered, with its checksum file forged to match: refused by the digest recorded
    # when it was taken, before anything reads it.
    good = path.read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    path.write_bytes(bytes(bad))
    (tmp_path / (path.name + ".sha256")).write_text(f"{sha256_file(path)}  {path.name}\n")
    with pytest.raises(StepFailed, match="is not the backup that was recorded.*the database was not touched"):
        restore_database(_app_env(own_pg), str(path), recorded)
    # A backup recorded before digests were (None): the GCM tag fails before the last
    # chunk reaches pg_restore, psql is killed before COMMIT, and nothing changes.
    with pytest.raises(StepFailed, match="fails authentication.*the database was not touched"):
        restore_database(_app_env(own_pg), str(path), None)
    assert _database(own_pg) == changed

    path.write_bytes(good)
    (tmp_path / (path.name + ".sha256")).write_text(f"{sha256_file(path)}  {path.name}\n")
    assert "one transaction" in restore_database(_app_env(own_pg), str(path), recorded).detail
    assert _database(own_pg) == at_backup  # the later table, column and row are gone


def test_a_backup_read_back_derives_its_key_once_and_a_wrong_passphrase_still_fails(tmp_path, monkeypatch):
    """scrypt costs about 0.25 s of CPU by design (a stolen backup's passphrase is slow
    to guess); a release writes a backup, reads it back whole and may restore it, in
    one process: the key of a (passphrase, salt) is derived once."""
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    from smartrelease.tasks.backup.crypto import BackupIntegrityError, encrypt_stream

    derived = []
    original = Scrypt.derive
    monkeypatch.setattr(Scrypt, "derive", lambda self, data: derived.append(1) or original(self, data))
    path = tmp_path / "b.dump.enc"
    encrypt_stream([b"row 1\n", b"row 2\n"], path, BACKUP_PASSPHRASE)
    for _ in range(2):
        assert b"".join(decrypt_stream(path, BACKUP_PASSPHRASE)) == b"row 1\nrow 2\n"
    assert len(derived) == 1
    with pytest.raises(BackupIntegrityError):
        b"".join(decrypt_stream(path, BACKUP_PASSPHRASE + "x"))
    assert len(derived) == 2  # another passphrase: its own key, which fails


@pytest.mark.parametrize("planted", [".prod-1.0.0.dump.enc.partial", ".prod-1.0.0.dump.enc.sha256.partial"])
def test_a_link_planted_in_backup_dir_is_replaced_not_written_through(pg, tmp_path, planted):
    """Issue 31: the partial files were opened with O_CREAT|O_TRUNC (the checksum with
    write_text): a link planted under their names made a root worker truncate and
    overwrite whatever it pointed to."""
    victim = tmp_path / "elsewhere" / "precious"
    victim.parent.mkdir()
    victim.write_text("must stay")
    backups = tmp_path / "backups"
    backups.mkdir()
    (backups / planted).symlink_to(victim)
    path = encrypted_backup(pg, backups)
    assert victim.read_text() == "must stay"
    assert not path.is_symlink() and read_whole(path, BACKUP_PASSPHRASE) == "custom, encrypted"
    assert not (backups / planted).exists()


def test_a_backups_label_from_an_image_stays_a_file_name_of_backup_dir():
    """The safety backup's label is the running image's version label, unvalidated."""
    from smartrelease.tasks.backup.take import backup_name

    for label, kept in (("1.2.0", "1.2.0"), ("../../etc/cron.d/x", "_.._etc_cron.d_x"), ("..", "unknown"),
                        ("a/b c", "a_b_c")):
        name = backup_name("prod", label)
        assert "/" not in name and name.startswith(f"prod-{kept}-"), (label, name)


def test_new_backups_derive_their_key_at_owasps_scrypt_cost_and_old_ones_still_read(tmp_path):
    """Issue 31: N was 2^15. New files record N=2^17, r=8, p=1 in their header; files
    of the first format (no parameters: N=2^15) are still decrypted."""
    import os

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    from smartrelease.tasks.backup.crypto import MAGIC_V1, BackupIntegrityError, encrypt_stream

    new = tmp_path / "new.dump.enc"
    encrypt_stream([b"rows\n"], new, BACKUP_PASSPHRASE)
    assert new.read_bytes()[len(MAGIC):len(MAGIC) + 3] == bytes([17, 8, 1])

    salt, nonce = os.urandom(16), os.urandom(12)  # the first format, as version 1 wrote it
    key = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(BACKUP_PASSPHRASE.encode())
    encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
    old = tmp_path / "old.dump.enc"
    old.write_bytes(MAGIC_V1 + salt + nonce + encryptor.update(b"old rows\n") + encryptor.finalize() + encryptor.tag)
    assert b"".join(decrypt_stream(old, BACKUP_PASSPHRASE)) == b"old rows\n"

    greedy = tmp_path / "greedy.dump.enc"  # a planted header asking for N=2^30 (128 GiB)
    greedy.write_bytes(MAGIC + bytes([30, 8, 1]) + old.read_bytes()[len(MAGIC_V1):])
    with pytest.raises(BackupIntegrityError, match="beyond"):
        b"".join(decrypt_stream(greedy, BACKUP_PASSPHRASE))
