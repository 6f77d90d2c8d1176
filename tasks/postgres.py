"""The one way this project connects to the app's PostgreSQL."""

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import psycopg
from pydantic import SecretStr

from smartrelease.errors import StepFailed

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

    def safe(self) -> str:
        user = f"{self.user}@" if self.user else ""
        return f"{user}{self.host}:{self.port}/{self.dbname}"


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
    )


def connect(url: SecretStr | None, step: str, timeout_s: float = CONNECT_TIMEOUT_S) -> psycopg.Connection:
    db = parse_database_url(url, step)
    try:
        return psycopg.connect(
            host=db.host,
            port=db.port,
            dbname=db.dbname,
            user=db.user,
            password=db.password.get_secret_value() if db.password else None,
            connect_timeout=max(1, int(timeout_s)),
            autocommit=True,
            application_name="smartrelease",
            options=f"-c statement_timeout={STATEMENT_TIMEOUT}",
        )
    except psycopg.Error as exc:
        raise StepFailed(step, f"cannot connect to {db.safe()}: {_first_line(exc)}") from None


def _first_line(exc: Exception) -> str:
    # libpq's messages name host, port, user and database, never the password.
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
