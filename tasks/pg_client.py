"""Where PostgreSQL's client programs (pg_dump, pg_restore, psql) run for an environment.

pg_dump refuses a server of a newer major version than its own, and pg_restore an
archive written by a newer pg_dump. So:
- a database that is a service of the Compose project (RELEASE_DATABASE_SERVICE) gets
  the programs of its own image, run in its container (`docker compose exec`), which
  match its server by construction. Data streams through this host, where backups are
  encrypted: no plain dump touches a disk;
- a database outside Compose gets this host's programs (Debian's /usr/bin wrappers
  pick the newest client installed), which must be at least as new as the server:
  otherwise the step fails before anything runs, naming both versions.

Each program is built as a Command value (tested without running anything); the
password travels in its environment, never its arguments.
"""

import functools
import re
from dataclasses import dataclass, field, replace

from psycopg.conninfo import make_conninfo

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import CommandFailed, StepFailed
from smartrelease.process import Command, run
from smartrelease.adapters.compose import ComposeProject
from smartrelease.tasks.launch import project_compose
from smartrelease.adapters.postgres import DatabaseUrl, parse_database_url, reachable_url, server_major

HOST_BIN = "/usr/bin"
CONNECT_TIMEOUT_S = "10"


def pg_environment(password: str | None) -> dict[str, str]:
    """The environment for PostgreSQL's client programs on this host."""
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": CONNECT_TIMEOUT_S}
    if password:
        env["PGPASSWORD"] = password  # the environment, never argv
    return env


def _connection(db: DatabaseUrl, host: str, port: int, params: bool = True) -> tuple[str, ...]:
    """Where to connect, as arguments: the database as a connection string that keeps
    DATABASE_URL's libpq parameters (sslmode, sslrootcert, …). Never the password."""
    dbname = make_conninfo(dbname=db.dbname, **dict(db.params)) if params and db.params else db.dbname
    return ("-h", host, "-p", str(port), "-d", dbname, *(("-U", db.user) if db.user else ()))


@dataclass(frozen=True)
class HostTools:
    """This host's client programs; `db` as this host reaches the server (None: files only)."""

    db: DatabaseUrl | None = None
    bin_dir: str = HOST_BIN

    where = "this host"

    def command(self, program: str, *args: str, connect: bool = True, timeout_s: float) -> Command:
        conn = _connection(self.db, self.db.host, self.db.port) if connect and self.db else ()
        return Command((f"{self.bin_dir}/{program}", *conn, *args), timeout_s=timeout_s,
                       env=pg_environment(self.db.password_value() if self.db else None), name=program)


@dataclass(frozen=True)
class ServiceTools:
    """The database service's own programs, in its running container; they reach the
    server on the container's loopback at the port DATABASE_URL names."""

    compose: ComposeProject = field(repr=False)
    service: str
    db: DatabaseUrl

    @property
    def where(self) -> str:
        return f"the {self.service} service's container"

    def command(self, program: str, *args: str, connect: bool = True, timeout_s: float) -> Command:
        # The container's own loopback: nothing crosses a network, and DATABASE_URL's
        # TLS files are this host's, not the container's.
        conn = _connection(self.db, "127.0.0.1", self.db.port, params=False) if connect else ()
        env = {"PGCONNECT_TIMEOUT": CONNECT_TIMEOUT_S}
        if connect and self.db.password:
            env["PGPASSWORD"] = self.db.password_value()
        return self.compose.exec(self.service, (program, *conn, *args), env=env, timeout_s=timeout_s,
                                 name=f"{program} (in the {self.service} service)")


PgTools = HostTools | ServiceTools


def on_database(tools: PgTools, dbname: str) -> PgTools:
    """The same programs, connecting to another database of the same server (a drill's scratch one)."""
    if tools.db is None:
        raise ValueError("these tools connect to no server")
    return replace(tools, db=replace(tools.db, dbname=dbname))


@functools.cache
def host_client_major(bin_dir: str = HOST_BIN) -> int | None:
    """The major version of this host's pg_dump, None when it is not installed."""
    try:
        out = run(Command((f"{bin_dir}/pg_dump", "--version"), timeout_s=30, env=pg_environment(None))).stdout
    except CommandFailed:
        return None
    found = re.search(r"\(PostgreSQL\)\s+(\d+)", out)
    return int(found[1]) if found else None


def pg_tools(env: Environment, step: str, *, server: bool = True) -> PgTools:
    """The programs for `env`. With `server` (a dump or restore: they connect), this
    host's programs must be at least as new as the server."""
    t = env.target
    if t.database_service:
        return ServiceTools(project_compose(env), t.database_service, parse_database_url(env.app.database_url, step))
    if not server:
        return HostTools()
    db = reachable_url(env, step)
    client = host_client_major()
    if client is None:
        raise StepFailed(step, "pg_dump is not installed on this host (Debian: postgresql-client)")
    major, full = server_major(env, step)
    if client < major:
        raise StepFailed(step, f"this host's PostgreSQL client is {client}, older than the server ({full}): pg_dump "
                               f"refuses a newer server. Install postgresql-client-{major} on this host, or, when the "
                               "database is a Compose service, set RELEASE_DATABASE_SERVICE so its own image runs them")
    return HostTools(db)
