"""A PostgreSQL cluster of our own on this host, on a port of our choosing, with WAL
archiving: the sandbox's and the tests' throwaway ones, and the Prefect server's
database when `smartrelease server up` is given no database URL.

initdb refuses to run as root, so as root the server runs as the `postgres` system
user, which must reach its data, socket and WAL archive directories: `server_dir`
says where that holds.

No login is trusted, not even a local one: the superuser has a password (in the
cluster's directory, 0600, the creator's), and the socket directory is the server's
own (0700). Another user of this host would otherwise get a superuser of a database
holding Prefect's blocks, and with `COPY … TO PROGRAM` a shell as the server's user.
"""

import functools
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
from psycopg import sql

from smartrelease.files import create_new, read_private
from smartrelease.process import Command, run
from smartrelease.redact import remember

PG_BIN = Path(os.environ.get("SMARTRELEASE_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "postgres"
# Where a cluster goes when the `postgres` user cannot reach the directory asked for
# (a checkout under a private home directory, as root).
SHARED_STATE = Path(os.environ.get("SMARTRELEASE_PG_STATE", "/var/lib/smartrelease"))
PG_CTL_TIMEOUT_S = 90


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", SUPERUSER, "--", *cmd] if os.geteuid() == 0 else cmd


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        pw = pwd.getpwnam(SUPERUSER)
        os.chown(path, pw.pw_uid, pw.pw_gid)


@functools.cache
def reachable_by_server(path: Path) -> bool:
    """Whether the server's user can reach `path`: enter every directory on the way to
    its nearest existing ancestor (always, unless we are root and the server runs as
    `postgres`). The directories below are made for it, and given to it, by us."""
    if os.geteuid() != 0:
        return True
    probe = Path(path).resolve()
    while not probe.exists():
        probe = probe.parent
    return subprocess.run(_as_postgres(["test", "-x", str(probe)]),
                          capture_output=True, timeout=30).returncode == 0


def server_dir(wanted: Path) -> Path:
    """`wanted`, or, when the server's user cannot reach it, a directory of its own
    under SHARED_STATE named after `wanted`."""
    wanted = Path(wanted).resolve()
    if reachable_by_server(wanted.parent):
        return wanted
    tag = hashlib.sha256(str(wanted).encode()).hexdigest()[:12]
    moved = SHARED_STATE / f"{wanted.parent.name.lstrip('.') or 'state'}-{wanted.name}-{tag}"
    SHARED_STATE.mkdir(mode=0o755, parents=True, exist_ok=True)
    return moved


def archive_current_segment(conn: psycopg.Connection, timeout_s: float = 30) -> str:
    """Close the current WAL segment (a superuser's session) and wait until the
    archiver shipped it; TimeoutError when it does not."""
    conn.execute("CREATE TEMP TABLE _touch AS SELECT 1")  # make sure the segment has content
    segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()[0]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        last = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]
        if last and last >= segment:
            return last
        time.sleep(0.1)
    raise TimeoutError(f"WAL segment {segment} was not archived within {timeout_s} s")


def _create_private(path: Path, text: str) -> None:
    with os.fdopen(create_new(path), "w") as f:
        f.write(text)


class Cluster:
    def __init__(self, root: Path, port: int, wal_archive_dir: Path | None = None):
        self.root = Path(root).resolve()
        self.port = port
        self.datadir = self.root / "data"
        self.socket_dir = self.root / "run"
        self.wal_archive_dir = Path(wal_archive_dir).resolve() if wal_archive_dir else None
        self.log = self.root / "postgres.log"
        self.password_file = self.root / "superuser-password"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A server program (initdb, pg_ctl) as the server's user; CommandFailed names the cause."""
        command = Command(tuple(_as_postgres([str(PG_BIN / args[0]), *args[1:]])), timeout_s=PG_CTL_TIMEOUT_S, name=args[0])
        return run(command, check=check)

    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").is_file()

    def init(self, listen: str | None = None) -> None:
        """A new cluster on 127.0.0.1 (and `listen`, an address containers reach, with
        password logins from Docker's private networks)."""
        if self.initialized:
            return
        for d in (self.root, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            _chown(d)
        self.socket_dir.chmod(0o700)
        password = secrets.token_urlsafe(24)
        _create_private(self.password_file, password)  # ours (root's as root): the server's user cannot read it
        pwfile = self.root / f".initdb-pw-{os.getpid()}"
        _create_private(pwfile, password)  # initdb reads it as the server's user, then it goes
        _chown(pwfile)
        try:
            self._run("initdb", "-D", str(self.datadir), "-U", SUPERUSER, "--pwfile", str(pwfile),
                      "--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8")
        finally:
            pwfile.unlink(missing_ok=True)
        conf = [
            f"listen_addresses = '127.0.0.1{', ' + listen if listen else ''}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "unix_socket_permissions = 0700",
            "wal_level = replica",
        ]
        if self.wal_archive_dir:
            self.wal_archive_dir.mkdir(parents=True, exist_ok=True)
            _chown(self.wal_archive_dir)
            conf += [
                "archive_mode = on",
                f"archive_command = 'test ! -f {self.wal_archive_dir}/%f && cp %p {self.wal_archive_dir}/%f'",
                "archive_timeout = 60",
            ]
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n# smartrelease sandbox\n" + "\n".join(conf) + "\n")
        if listen:
            # Docker gives its networks addresses from any private range.
            with open(self.datadir / "pg_hba.conf", "a") as f:
                f.write("".join(f"host all all {net} scram-sha-256\n"
                                for net in ("172.16.0.0/12", "192.168.0.0/16", "10.0.0.0/8")))

    def running(self) -> bool:
        return self._run("pg_ctl", "-D", str(self.datadir), "status", check=False).returncode == 0

    def start(self) -> None:
        if self.running():
            return
        log = self.log
        if not log.exists():
            log.touch()
            _chown(log)
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        if self.initialized and self.running():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def superuser_password(self) -> str | None:
        """None for a cluster made before local logins needed one (it trusts them)."""
        password = read_private(self.password_file)
        remember([password])
        return password

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=dbname,
                               password=self.superuser_password(), autocommit=True)

    def ensure_app_database(self, user: str, password: str, dbname: str) -> None:
        """Create (or reset the password of) the app's role and database. The role may
        create databases: a restore drill restores into a scratch one."""
        with self.admin() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL(verb + " ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(user), sql.Literal(password)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(user)))

    def serve_tls(self, cert_pem: bytes, key_pem: bytes) -> None:
        """TLS on, with this certificate, and plain-text connections over TCP refused."""
        for name, content in (("server.crt", cert_pem), ("server.key", key_pem)):
            path = self.datadir / name
            with os.fdopen(create_new(path), "wb") as f:
                f.write(content)
            _chown(path)
        hba = self.datadir / "pg_hba.conf"
        hba.write_text("hostnossl all all all reject\n" + hba.read_text())
        with self.admin() as conn:
            conn.execute("ALTER SYSTEM SET ssl = on")
            conn.execute("SELECT pg_reload_conf()")

    def switch_wal(self, timeout_s: float = 30) -> str:
        """Close the current WAL segment and wait until the archiver shipped it."""
        with self.admin() as conn:
            return archive_current_segment(conn, timeout_s)

    def dsn(self, user: str, password: str, dbname: str) -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{dbname}"
