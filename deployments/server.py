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
- analytics off;
- locked: every API call needs the credentials `server up` generates (Prefect's basic
  authentication, `PREFECT_SERVER_API_AUTH_STRING`; the UI asks for them), writes
  need a CSRF token (Prefect's clients fetch one), and browsers may call the API only
  from the UI's own origin (CORS). Open-source Prefect has no users or roles: whoever
  holds the credentials can read every environment's secrets and run anything.

Over HTTPS when `SMARTRELEASE_SERVER_TLS_CERT` and `SMARTRELEASE_SERVER_TLS_KEY` name a
certificate (chain) and its key: the same app, served by uvicorn with TLS (`prefect
server start` has no TLS options); clients trust it through `SMARTRELEASE_SERVER_TLS_CA`
(given to Prefect's client as PREFECT_API_SSL_CERT_FILE) or the system store.

State (pid, log, PREFECT_HOME with the leases, the local database's password and the
API's credentials, mode 0600) is in `SMARTRELEASE_SERVER_DIR` (default
`.smartrelease-server`). A client on this host finds the credentials there
(`client_environment`); one elsewhere (CI, a worker on another host) is given
`PREFECT_API_AUTH_STRING` from its own secret store.
"""

import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import SecretStr

from smartrelease.daemon import Background
from smartrelease.errors import ConfigError
from smartrelease.files import read_private, write_private
from smartrelease.redact import mask, remember
from smartrelease.adapters.http import answers, http_client, is_loopback

LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
SLOT_WAIT_S = 2
START_TIMEOUT_S = 180
DB_ROLE = DB_NAME = "prefect"
AUTH_USER = "smartrelease"


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
    tls_cert: str | None = field(default_factory=lambda: os.environ.get("SMARTRELEASE_SERVER_TLS_CERT") or None)
    tls_key: str | None = field(default_factory=lambda: os.environ.get("SMARTRELEASE_SERVER_TLS_KEY") or None)
    tls_ca: str | None = field(default_factory=lambda: os.environ.get("SMARTRELEASE_SERVER_TLS_CA") or None)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    @property
    def ui_url(self) -> str:
        # A certificate names a host, not 127.0.0.1: clients ask for `localhost`.
        host = "localhost" if self.tls_cert and self.host in ("127.0.0.1", "0.0.0.0") else self.host
        return f"{self.scheme}://{host}:{self.port}"

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

    @property
    def auth_file(self) -> Path:  # `user:password`, Prefect's auth string
        return self.state_dir / "api-auth"

    @property
    def ui_origin(self) -> str:
        return self.ui_url


def _database_url_from_env() -> SecretStr | None:
    url = os.environ.get("SMARTRELEASE_SERVER_DATABASE_URL")
    if not url:
        return None
    if not url.startswith("postgresql+asyncpg://"):
        raise ConfigError("SMARTRELEASE_SERVER_DATABASE_URL must be a postgresql+asyncpg:// URL "
                          f"(got {mask(url.split('://')[0])}://…)")
    remember([url])
    return SecretStr(url)


def auth_string(s: ServerSettings) -> str | None:
    """The server's credentials, when it has some (`server up` made them)."""
    text = read_private(s.auth_file)
    if text is None:
        return None
    remember([text, text.split(":", 1)[-1]])
    return text


def ensure_auth(s: ServerSettings) -> str:
    """The server's credentials, made (0600) on first use."""
    if (existing := auth_string(s)) is not None:
        return existing
    write_private(s.auth_file, f"{AUTH_USER}:{secrets.token_urlsafe(24)}")
    return auth_string(s) or ""


def client_environment(s: ServerSettings) -> dict[str, str]:
    """What a client of this server (the CLI, a worker, a test) needs in its environment."""
    env = {"PREFECT_API_URL": s.api_url}
    if (auth := auth_string(s)) is not None:
        env["PREFECT_API_AUTH_STRING"] = auth
    if s.tls_ca:
        env["PREFECT_API_SSL_CERT_FILE"] = s.tls_ca
    return env


def client_settings(s: ServerSettings) -> dict:
    """The same, as Prefect settings for `temporary_settings` (this process's client)."""
    import prefect.settings

    return {getattr(prefect.settings, name): value for name, value in client_environment(s).items()}


def use_local_credentials(environ=os.environ) -> None:
    """A client on the server's own host: when PREFECT_API_URL names the server of
    SMARTRELEASE_SERVER_DIR and no credentials are given, that server's are used.
    (Before Prefect is imported: its settings are read from the environment once.)"""
    if environ.get("PREFECT_API_AUTH_STRING") or not environ.get("PREFECT_API_URL"):
        return
    try:
        s = ServerSettings(database_url=None)
    except ConfigError:
        return
    if environ["PREFECT_API_URL"].rstrip("/") == s.api_url and (auth := auth_string(s)) is not None:
        environ["PREFECT_API_AUTH_STRING"] = auth


def server_environment(s: ServerSettings, database_url: str, auth: str) -> dict[str, str]:
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
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED": "true",
        # A page of another origin open in an operator's browser may not call the API.
        "PREFECT_SERVER_API_CORS_ALLOWED_ORIGINS": s.ui_origin,
    }


def server_argv(s: ServerSettings) -> list[str]:
    if s.tls_cert:  # Prefect's app as `prefect server start` serves it, with TLS
        return [sys.executable, "-c", TLS_SERVER, s.host, str(s.port), s.tls_cert, s.tls_key or ""]
    return [sys.executable, "-m", "prefect", "server", "start", "--host", s.host, "--port", str(s.port),
            "--analytics-off", "--ui", "--no-background"]


# What `prefect server start --no-background` runs (prefect/cli/_server_utils.py,
# _run_in_foreground, one worker, services on), plus uvicorn's TLS arguments.
TLS_SERVER = """
import sys
import uvicorn
from prefect.server.api.server import create_app
host, port, cert, key = sys.argv[1:5]
uvicorn.run(app=create_app(final=True), host=host, port=int(port), timeout_keep_alive=5,
            ws_ping_interval=20.0, ws_ping_timeout=20.0, ssl_certfile=cert, ssl_keyfile=key or None)
"""


def answering(s: ServerSettings, timeout_s: float = 2) -> bool:
    return answers(f"{s.api_url}/health", timeout_s=timeout_s, ca_bundle=s.tls_ca)


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
    if read_private(s.password_file) is None:
        write_private(s.password_file, secrets.token_urlsafe(24))
    password = read_private(s.password_file) or ""
    remember([password])
    cluster.ensure_app_database(DB_ROLE, password, DB_NAME)
    return f"postgresql+asyncpg://{DB_ROLE}:{password}@127.0.0.1:{s.pg_port}/{DB_NAME}"


def up(s: ServerSettings | None = None) -> str:
    """Start the server (if it is not answering already) and wait until it answers."""
    s = s or ServerSettings()
    if not s.tls_cert and not is_loopback(s.host):
        raise ServerError(f"SMARTRELEASE_SERVER_HOST={s.host} without TLS would take the API's credentials in clear "
                          "from the network: set SMARTRELEASE_SERVER_TLS_CERT and SMARTRELEASE_SERVER_TLS_KEY, or "
                          "serve on 127.0.0.1")
    if answering(s):
        return f"Prefect server already up at {s.ui_url}"
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ServerError("SMARTRELEASE_SERVER_TLS_CERT and SMARTRELEASE_SERVER_TLS_KEY go together: set both, or "
                          "neither for plain HTTP")
    for path in (s.tls_cert, s.tls_key, s.tls_ca):
        if path and not Path(path).is_file():
            raise ServerError(f"{path} does not exist (SMARTRELEASE_SERVER_TLS_*)")
    s.state_dir.mkdir(parents=True, exist_ok=True)
    s.state_dir.chmod(0o700)
    s.home.mkdir(exist_ok=True)
    url = s.database_url.get_secret_value() if s.database_url else _local_database_url(s)
    env = {**os.environ, **server_environment(s, url, ensure_auth(s))}
    for client_only in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING"):  # the server is not a client of another one
        env.pop(client_only, None)
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
    user, _, password = (auth_string(s) or ":").partition(":")
    with http_client(s.api_url, timeout_s=5, ca_bundle=s.tls_ca, ca_setting="SMARTRELEASE_SERVER_TLS_CA",
                     auth=httpx.BasicAuth(user, password) if password else None) as client:
        version = client.get("/admin/version").json()
    pid = _process(s).pid()
    return True, (f"Prefect server {version} up at {s.ui_url}" + (f", pid {pid}" if pid else ", not started by us")
                  + f"; clients use PREFECT_API_URL={s.api_url} and PREFECT_API_AUTH_STRING from {s.auth_file}")


def destroy_database(s: ServerSettings) -> None:
    """Delete the server's own cluster (its runs, artifacts and blocks) for good."""
    if not s.database_url:
        _local_cluster(s).destroy()
