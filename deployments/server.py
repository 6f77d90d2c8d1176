"""A self-hosted Prefect server on PostgreSQL: `smartrelease server up|down|status`.

The server is Prefect's own (`prefect server start`, the API and the UI), run in
the background with the settings release automation needs:

- its database is PostgreSQL: `SMARTRELEASE_SERVER_DATABASE_URL` (any
  `postgresql+asyncpg://` URL), or, without it, a cluster of its own on this host
  (under the state directory, `SMARTRELEASE_SERVER_PG_PORT`);
- concurrency leases are kept on disk (`filesystem` lease storage): with the default
  in-memory storage a restart of the server leaks a held slot, and the environment's
  release lock with it, for good;
- a run waiting for an environment's lock asks again within
  `SLOT_WAIT_S` seconds of it being freed (Prefect's default is up to 30 s), and an
  expired lease is noticed within 5 s (default 15 s);
- analytics off.

State (pid, log, PREFECT_HOME with the leases, the local database's password, mode
0600) is in `SMARTRELEASE_SERVER_DIR` (default `.smartrelease-server`).
"""

import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from smartrelease.daemon import Background
from smartrelease.errors import ConfigError
from smartrelease.redact import mask, remember
from tasks.http import answers, http_client

LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
SLOT_WAIT_S = 2
START_TIMEOUT_S = 180
DB_ROLE = DB_NAME = "prefect"


class ServerError(ConfigError):
    """The server could not be started, stopped or reached; the message says why."""


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, str(default))
    if not value.isdigit():
        raise ConfigError(f"{name} must be a port number, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class ServerSettings:
    state_dir: Path = field(default_factory=lambda: Path(os.environ.get("SMARTRELEASE_SERVER_DIR",
                                                                        ".smartrelease-server")).resolve())
    host: str = field(default_factory=lambda: os.environ.get("SMARTRELEASE_SERVER_HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _env_int("SMARTRELEASE_SERVER_PORT", 4200))
    pg_port: int = field(default_factory=lambda: _env_int("SMARTRELEASE_SERVER_PG_PORT", 55442))
    database_url: SecretStr | None = field(default_factory=lambda: _database_url_from_env())

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def home(self) -> Path:  # PREFECT_HOME: the lease files live here
        return self.state_dir / "home"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "server.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "server.log"

    @property
    def password_file(self) -> Path:
        return self.state_dir / "database-password"


def _database_url_from_env() -> SecretStr | None:
    url = os.environ.get("SMARTRELEASE_SERVER_DATABASE_URL")
    if not url:
        return None
    if not url.startswith("postgresql+asyncpg://"):
        raise ConfigError("SMARTRELEASE_SERVER_DATABASE_URL must be a postgresql+asyncpg:// URL "
                          f"(got {mask(url.split('://')[0])}://…)")
    remember([url])
    return SecretStr(url)


def server_environment(s: ServerSettings, database_url: str) -> dict[str, str]:
    """The variables `prefect server start` runs with (on top of this process's)."""
    return {
        "PREFECT_HOME": str(s.home),
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": LEASE_STORAGE,
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": str(SLOT_WAIT_S),
        # Expired leases (a killed holder's) are looked for every 5 s, not 15.
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "5",
        "PREFECT_UI_API_URL": s.api_url,
    }


def server_argv(s: ServerSettings) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", s.host, "--port", str(s.port),
            "--analytics-off", "--ui", "--no-background"]


def answering(s: ServerSettings, timeout_s: float = 2) -> bool:
    return answers(f"{s.api_url}/health", timeout_s=timeout_s)


def _process(s: ServerSettings) -> Background:
    return Background(s.pid_file, s.log_file)


def _local_cluster(s: ServerSettings):
    from smartrelease.local_postgres import Cluster, server_dir

    return Cluster(server_dir(s.state_dir / "postgres"), s.pg_port)


def _local_database_url(s: ServerSettings) -> str:
    """A cluster of the server's own on this host, started, with its role and database."""
    cluster = _local_cluster(s)
    cluster.init()
    cluster.start()
    if not s.password_file.is_file():
        s.password_file.touch(mode=0o600)
        s.password_file.write_text(secrets.token_urlsafe(24))
    password = s.password_file.read_text().strip()
    remember([password])
    cluster.ensure_app_database(DB_ROLE, password, DB_NAME)
    return f"postgresql+asyncpg://{DB_ROLE}:{password}@127.0.0.1:{s.pg_port}/{DB_NAME}"


def up(s: ServerSettings | None = None) -> str:
    """Start the server (if it is not answering already) and wait until it answers."""
    s = s or ServerSettings()
    if answering(s):
        return f"Prefect server already up at {s.ui_url}"
    s.state_dir.mkdir(parents=True, exist_ok=True)
    s.state_dir.chmod(0o700)
    s.home.mkdir(exist_ok=True)
    url = s.database_url.get_secret_value() if s.database_url else _local_database_url(s)
    env = {**os.environ, **server_environment(s, url)}
    env.pop("PREFECT_API_URL", None)  # the server is not a client of another one
    process = _process(s)
    proc = process.start(server_argv(s), env=env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answering(s):
        if proc.poll() is not None:
            s.pid_file.unlink(missing_ok=True)
            raise ServerError(f"the Prefect server exited ({proc.returncode}) while starting: {process.log_tail()} "
                              f"(log: {s.log_file})")
        if time.monotonic() > deadline:
            process.stop()
            raise ServerError(f"the Prefect server did not answer within {START_TIMEOUT_S} s (log: {s.log_file})")
        time.sleep(0.5)
    where = "PostgreSQL " + (_where(s.database_url.get_secret_value()) if s.database_url
                              else f"on 127.0.0.1:{s.pg_port} (a cluster of its own)")
    return f"Prefect server up at {s.ui_url} (API {s.api_url}), database {where}, leases in {s.home}"


def _where(url: str) -> str:
    """host:port/database of a database URL, without its user or password."""
    return url.split("@", 1)[-1]


def down(s: ServerSettings | None = None, *, keep_database: bool = False) -> str:
    """Stop the server (and its own database cluster, unless `keep_database`)."""
    s = s or ServerSettings()
    stopped = _process(s).stop()
    if not s.database_url and not keep_database:
        _local_cluster(s).stop()
    return "Prefect server stopped" if stopped else "Prefect server was not running"


def status(s: ServerSettings | None = None) -> tuple[bool, str]:
    s = s or ServerSettings()
    if not answering(s):
        return False, f"Prefect server down (expected at {s.api_url})"
    with http_client(s.api_url, timeout_s=5) as client:
        version = client.get("/admin/version").json()
    pid = _process(s).pid()
    return True, (f"Prefect server {version} up at {s.ui_url}" + (f", pid {pid}" if pid else ", not started by us")
                  + f"; clients use PREFECT_API_URL={s.api_url}")


def destroy_database(s: ServerSettings) -> None:
    """Delete the server's own cluster (its runs, artifacts and blocks) for good."""
    if not s.database_url:
        _local_cluster(s).destroy()
