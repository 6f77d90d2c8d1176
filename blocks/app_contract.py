"""The app's contract: what this tool assumes about the app it releases, in one typed
place, with the runbook's values as defaults. Every field is a RELEASE_ setting
(field `x` is key `RELEASE_X`), so an app that names things otherwise is released by
setting them in its env file, not by changing code.

- the Compose services a release ships (backend, frontend) and the variables of the
  compose file that receive their pinned images (BACKEND_IMAGE, FRONTEND_IMAGE);
- the database: an outside server (the default), or a service of the Compose project
  (the runbook's `docker-compose.prod.yml`), whose own image then runs pg_dump,
  pg_restore and psql;
- the endpoints the smoke tests, readiness and verification call, and the JSON keys
  of the version endpoint;
- the migrations: where the backend image holds them, the table Sequelize records
  them in (`migrationStorageTableName`), and the command that undoes the newest one.
"""

import json
import re
import shlex
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field, field_validator

Role = Literal["backend", "frontend"]
ROLES: tuple[Role, ...] = ("backend", "frontend")  # the two images a release ships

_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH = re.compile(r"/[^\s#]*")
_KEY = re.compile(r"[^.\s]+(\.[^.\s]+)*")
_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):(?P<port>[0-9]{1,5})")


def _matching(pattern: re.Pattern, rule: str) -> AfterValidator:
    def check(value: str | None) -> str | None:
        if value is not None and not pattern.fullmatch(value):
            raise ValueError(rule)
        return value
    return AfterValidator(check)


# The notions the contract is made of, each checked where it is read.
ServiceName = Annotated[str, _matching(_SERVICE, "must be a Compose service name ([A-Za-z0-9][A-Za-z0-9_.-]*)")]
VariableName = Annotated[str, _matching(_VARIABLE, "must be a variable name ([A-Za-z_][A-Za-z0-9_]*)")]
UrlPath = Annotated[str, _matching(_PATH, "must be a path starting with / (no spaces, no #)")]
JsonKey = Annotated[str, _matching(_KEY, "must be a JSON key (a.b for nested keys, no spaces)")]


class AppContract(BaseModel):
    backend_service: ServiceName = Field("backend", description="The Compose service that runs the backend image.")
    frontend_service: ServiceName = Field("frontend", description="The Compose service that runs the frontend image.")
    database_service: ServiceName | None = Field(None, description="The Compose service that runs PostgreSQL, when the database is part of the project (the runbook's topology); unset for a database outside Compose.")
    database_address: str | None = Field(None, description="host:port at which this host reaches the database, when it differs from DATABASE_URL's (the app's view, e.g. db:5432 on the project's network). Default: DATABASE_URL's host and port; with database_service, that service's container address on the project's network.")
    backend_image_variable: VariableName = Field("BACKEND_IMAGE", description="The compose file's variable for the backend image reference.")
    frontend_image_variable: VariableName = Field("FRONTEND_IMAGE", description="The compose file's variable for the frontend image reference.")
    backend_port: int | None = Field(None, ge=1, le=65535, description="The port the backend's containers listen on, where a release with RELEASE_EDGE=dns probes each new one on its own address (RELEASE_READY_PATH). Default: the one TCP port its image exposes (EXPOSE).")
    frontend_port: int | None = Field(None, ge=1, le=65535, description="The port the frontend's containers listen on, where a release with RELEASE_EDGE=dns probes each new one on its own address (RELEASE_FRONTEND_READY_PATH). Default: the one TCP port its image exposes (EXPOSE).")
    frontend_pins_backend: bool = Field(False, description="Whether the frontend resolves the backend's name once, when it starts, and keeps the addresses it got (nginx with `proxy_pass http://backend:5000;` and no `resolver`). A release that replaces the backend then starts the new frontend only once the new backend serves, stops the old frontend before the old backend, and replaces the frontend again (same image) once the old backend is gone, so that no frontend is left sending requests to an address that has gone; the frontend is replaced even when its image is unchanged. Between the two, some requests wait on the old backend's address: see RELEASE_FRONTEND_CONNECT_TIMEOUT_S.")
    frontend_connect_timeout_s: float | None = Field(None, gt=0, le=600, description="With RELEASE_FRONTEND_PINS_BACKEND: how long the frontend waits to connect to a backend address before it tries the next one (nginx's `proxy_connect_timeout`; unset: nginx's default, 60 s). The release does not change it; it tells the plan what users may see: the frontend started beside the old backend still sends some requests to that backend's address once it is gone, and they wait this long, or until the kernel gives up on the address, before reaching the new one. 1 s or less (set `proxy_connect_timeout 1s;` in the frontend): a wait of about 2 s at most, nothing fails, and RELEASE_ZERO_DOWNTIME=required accepts it; more, or unset: the plan says some users may get errors, and required refuses it.")
    frontend_ready_path: UrlPath = Field("/", description="What a release with RELEASE_EDGE=dns asks of each new frontend container on its own address: 200 when it serves.")
    health_path: UrlPath = Field("/health", description="Liveness endpoint, smoke-tested.")
    ready_path: UrlPath = Field("/ready", description="Readiness endpoint (the database reachable): wait-ready polls it, smoke-tested.")
    api_health_path: UrlPath = Field("/api/health", description="The endpoint preflight's tls check calls through the public URL.")
    version_path: UrlPath = Field("/api/system/version", description="The build metadata endpoint verify reads, smoke-tested.")
    auth_health_path: UrlPath = Field("/api/auth/health", description="The auth subsystem's health endpoint, smoke-tested.")
    metrics_url: str = Field("/metrics", description="Prometheus metrics: a path on the public URL, or an internal http URL whose host may be a Compose service of the project (e.g. http://backend:8080/metrics).")
    version_key: JsonKey = Field("version", description="The version endpoint's JSON key for the version (a.b for nested keys).")
    git_sha_key: JsonKey = Field("gitSha", description="The version endpoint's JSON key for the git SHA.")
    build_time_key: JsonKey = Field("buildTime", description="The version endpoint's JSON key for the build time.")
    environment_key: JsonKey = Field("environment", description="The version endpoint's JSON key for the environment (NODE_ENV).")
    migrations_dir: str = Field("/app/migrations", description="Where the backend image holds its migration files; each file's name is what the migrations table records.")
    migrations_table: str = Field("SequelizeMeta", description="The table Sequelize records applied migrations in (its migrationStorageTableName).")
    undo_command: str = Field("npm run db:rollback", description="The app's command that undoes its newest migration, run in a one-off backend container (the runbook's `npm run db:rollback`).")

    # --- what the flows ask of it ------------------------------------------------

    def service(self, role: Role) -> str:
        return self.backend_service if role == "backend" else self.frontend_service

    def role_of(self, service: str) -> Role | None:
        return next((r for r in ROLES if self.service(r) == service), None)

    def port(self, role: Role) -> int | None:
        return self.backend_port if role == "backend" else self.frontend_port

    def listen_port(self, role: Role, exposed: tuple[int, ...]) -> int | None:
        """The port a container of `role` listens on: the setting, else the one TCP port
        its image exposes (`exposed`); None when neither tells."""
        return self.port(role) or (exposed[0] if len(exposed) == 1 else None)

    def ready_path_of(self, role: Role) -> str:
        """What a new container of `role` answers 200 on, on its own address, once it serves."""
        return self.ready_path if role == "backend" else self.frontend_ready_path

    def image_variable(self, role: Role) -> str:
        return self.backend_image_variable if role == "backend" else self.frontend_image_variable

    @property
    def smoke_paths(self) -> tuple[str, ...]:
        """The runbook's smoke script's endpoints, in its order."""
        return (self.health_path, self.ready_path, self.version_path, self.auth_health_path)

    @property
    def version_keys(self) -> dict[str, str]:
        """What verify checks -> the JSON key it is read from."""
        return {"version": self.version_key, "git_sha": self.git_sha_key, "build_time": self.build_time_key,
                "environment": self.environment_key}

    def database_host_port(self) -> tuple[str, int] | None:
        """RELEASE_DATABASE_ADDRESS split, or None."""
        if not self.database_address:
            return None
        found = _HOST_PORT.fullmatch(self.database_address)
        return found["host"].strip("[]"), int(found["port"])

    # --- checked when the env file is read ----------------------------------------

    @field_validator("metrics_url")
    @classmethod
    def _metrics(cls, value: str) -> str:
        if _PATH.fullmatch(value):
            return value
        try:
            parts = urlsplit(value)
        except ValueError:
            parts = None
        if not parts or parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ValueError("must be a path starting with / or an http(s) URL without credentials")
        return value

    @field_validator("migrations_table")
    @classmethod
    def _table(cls, value: str) -> str:
        if not 0 < len(value.encode()) <= 63 or "\x00" in value:
            raise ValueError("must be a table name of 1 to 63 bytes")
        return value

    @field_validator("database_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        found = _HOST_PORT.fullmatch(value)
        if not found or not 0 < int(found["port"]) < 65536:
            raise ValueError("must be host:port")
        return value

    @field_validator("undo_command")
    @classmethod
    def _command(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"does not split into words ({exc})") from None
        if not words:
            raise ValueError("is empty")
        return value


def _lookup(body: dict, key: str) -> tuple[bool, object]:
    """(whether the path `a.b` leads somewhere in `body`, the value there)."""
    value = body
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return False, None
        value = value[part]
    return True, value


def json_value(body: dict, key: str):
    """`body[a][b]` for key `a.b`; None where the path does not lead."""
    return _lookup(body, key)[1]


def has_key(body: dict, key: str) -> bool:
    """Whether the path `a.b` leads somewhere in `body` (its value may be null)."""
    return _lookup(body, key)[0]


def key_paths(body: dict, limit: int = 20) -> list[str]:
    """The dotted keys of `body`'s values, nested objects followed, for a message naming
    what an answer does have (escaped to one line each; the first `limit`)."""
    found: list[str] = []

    def walk(value: dict, prefix: str) -> None:
        for key, inner in value.items():
            path = prefix + json.dumps(str(key))[1:-1][:40]
            if isinstance(inner, dict) and inner:
                walk(inner, path + ".")
            else:
                found.append(path)

    walk(body, "")
    return found[:limit] + ([f"… {len(found) - limit} more"] if len(found) > limit else [])
