"""The one way this project reaches the app's PostgreSQL.

DATABASE_URL is the app's view of the database (`db:5432` on the Compose project's
network, say); this host may reach it elsewhere. `reachable_url` says where:
RELEASE_DATABASE_ADDRESS when set; else, for a database that is a service of the
project (RELEASE_DATABASE_SERVICE), that container's address on the project's
network, read from Docker Engine; else DATABASE_URL's own host and port.
"""

import time
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, unquote, urlsplit

import docker
import psycopg
from pydantic import SecretStr

from smartrelease.errors import StepFailed
from smartrelease.adapters.images import engine
from smartrelease.adapters.running import service_address

CONNECT_TIMEOUT_S = 5
# The tool's own queries are small; one waiting behind a lock (a migration running)
# gives up instead of hanging the step.
STATEMENT_TIMEOUT = "60s"


@dataclass(frozen=True)
class DatabaseUrl:
    host: str
    port: int
    dbname: str
    user: str | None
    password: SecretStr | None
    seen_by_app: str | None = None  # host:port in DATABASE_URL, when this host reaches it elsewhere
    # libpq's parameters from the URL's query (sslmode, sslrootcert, …): every client
    # of this tool connects with them, or a database outside Compose is reached in clear.
    params: tuple[tuple[str, str], ...] = ()

    def safe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        via = f" (reached at {self.host}:{self.port})" if self.seen_by_app else ""
        return f"{user}{self.seen_by_app or f'{self.host}:{self.port}'}/{self.dbname}{via}"

    def reached_at(self, host: str, port: int) -> "DatabaseUrl":
        if (host, port) == (self.host, self.port):
            return self
        return replace(self, host=host, port=port, seen_by_app=f"{self.host}:{self.port}")

    def password_value(self) -> str | None:
        return self.password.get_secret_value() if self.password else None


def parse_database_url(url: SecretStr | None, step: str) -> DatabaseUrl:
    """Split DATABASE_URL ourselves so psycopg never sees (and never quotes back) the raw string."""
    if url is None or not url.get_secret_value():
        raise StepFailed(step, "DATABASE_URL is not set")
    try:
        parts = urlsplit(url.get_secret_value())
        port = parts.port or 5432
    except ValueError:
        raise StepFailed(step, "DATABASE_URL does not parse as a URL") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise StepFailed(step, f"DATABASE_URL scheme must be postgres:// or postgresql://, not {parts.scheme or 'none'}://")
    dbname = unquote(parts.path.lstrip("/"))
    if not parts.hostname or not dbname:
        raise StepFailed(step, "DATABASE_URL must name a host and a database")
    return DatabaseUrl(
        host=parts.hostname,
        port=port,
        dbname=dbname,
        user=unquote(parts.username) if parts.username else None,
        password=SecretStr(unquote(parts.password)) if parts.password else None,
        params=libpq_params(parts.query, step),
    )


# libpq's connection parameters a URL may carry; host, port, dbname, user and password
# come from the URL itself, and these are set by the tool.
TOOL_SET = {"host", "hostaddr", "port", "dbname", "user", "password", "connect_timeout", "application_name",
            "options"}
LIBPQ_PARAMS = {"sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslcrldir", "sslsni", "sslcompression",
                "sslcertmode", "ssl_min_protocol_version", "ssl_max_protocol_version", "requiressl",
                "channel_binding", "gssencmode", "require_auth", "target_session_attrs", "krbsrvname",
                "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout"}


def libpq_params(query: str, step: str) -> tuple[tuple[str, str], ...]:
    """The URL's query as libpq parameters. A driver's own spelling that libpq does not
    know (node-postgres's `ssl=true`) is refused, named: ignored, it meant plain text."""
    params = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in LIBPQ_PARAMS:
            params.append((key, value))
        elif key == "ssl":
            raise StepFailed(step, "DATABASE_URL's ssl= is a driver's own setting; this tool's clients (libpq: "
                                   "psycopg, pg_dump, psql) need sslmode: add sslmode=verify-full (with "
                                   "sslrootcert=…) or sslmode=require")
        elif key not in TOOL_SET:
            raise StepFailed(step, f"DATABASE_URL has the parameter {key!r}, which libpq does not know: remove it "
                                   f"(known: {', '.join(sorted(LIBPQ_PARAMS))})")
    return tuple(params)


def reachable_url(env, step: str) -> DatabaseUrl:
    """DATABASE_URL as this host reaches it (see the module's docstring)."""
    db = parse_database_url(env.app.database_url, step)
    t = env.target
    if address := t.database_host_port():
        return db.reached_at(*address)
    if t.database_service:
        try:
            found = service_address(engine(timeout_s=30), t.compose_project or "", t.database_service)
        except docker.errors.DockerException as exc:
            raise StepFailed(step, f"cannot read the database service's address from Docker Engine: {exc}",
                             transient=True) from None
        if found is None:
            raise StepFailed(step, f"the database service {t.database_service} is not running in Compose project "
                                   f"{t.compose_project}: start it with `docker compose -p {t.compose_project} "
                                   f"up -d {t.database_service}` (an environment's database is provisioned "
                                   "before its first release)", transient=True)
        return db.reached_at(found, db.port)
    return db


def connect(env, step: str, timeout_s: float = CONNECT_TIMEOUT_S) -> psycopg.Connection:
    """A session with the app's credentials, at the address this host reaches."""
    return connect_url(reachable_url(env, step), step, timeout_s)


def connect_url(db: DatabaseUrl, step: str, timeout_s: float = CONNECT_TIMEOUT_S) -> psycopg.Connection:
    try:
        return psycopg.connect(
            host=db.host,
            port=db.port,
            dbname=db.dbname,
            user=db.user,
            password=db.password_value(),
            connect_timeout=max(1, int(timeout_s)),
            autocommit=True,
            application_name="smartrelease",
            options=f"-c statement_timeout={STATEMENT_TIMEOUT}",
            **dict(db.params),
        )
    except psycopg.Error as exc:
        raise StepFailed(step, f"cannot connect to {db.safe()}: {_first_line(exc)}", transient=server_away(exc)) from None


def server_away(exc: psycopg.Error) -> bool:
    """True when the server did not answer (refused, timed out) or answered that it
    is starting or stopping: worth trying again. A refused password or a missing
    database is not. libpq gives a failed connection no SQLSTATE, so a server's
    refusal is told by its FATAL line."""
    if code := getattr(exc, "sqlstate", None):
        return code.startswith(("57P", "08"))
    text = str(exc)
    return "FATAL:" not in text or any(s in text for s in _NOT_NOW)


# The server's own words for SQLSTATE 57P01-57P03 (it answers, but cannot take a session now).
_NOT_NOW = ("the database system is starting up", "the database system is shutting down",
            "the database system is in recovery mode", "the database system is not yet accepting connections",
            "terminating connection due to administrator command")


def database_answers_within(env, step: str, timeout_s: float, poll_s: float = 0.5) -> float:
    """Seconds until the app's database accepts a session (0 when it does at once).
    Waits only while it is away (restarting, a failover); raises the StepFailed at
    once for any other reason, and the last one once `timeout_s` has passed."""
    started, attempts = time.monotonic(), 0
    while True:
        attempts += 1
        try:
            connect(env, step, timeout_s=min(CONNECT_TIMEOUT_S, max(1.0, timeout_s))).close()
            return 0.0 if attempts == 1 else time.monotonic() - started
        except StepFailed as exc:
            if not exc.transient or time.monotonic() - started >= timeout_s:
                raise
        time.sleep(poll_s)


def server_major(env, step: str) -> tuple[int, str]:
    """(major version, full version) of the app's PostgreSQL server."""
    with connect(env, step) as conn:
        number, full = conn.execute("SELECT current_setting('server_version_num'), current_setting('server_version')").fetchone()
    return int(number) // 10000, full


def _first_line(exc: Exception) -> str:
    # libpq's messages name host, port, user and database, never the password.
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
