"""`smartrelease sandbox up [--dev] [--external-db] [--app PATH] [--server]|down|status|destroy`: production on one machine.

The runbook's topology by default: PostgreSQL 17 (newer than this host's client
tools) as the `db` service of the Compose project, its data in a named volume, its
WAL archived to a bind-mounted directory; the Node.js/Sequelize stand-in backend, its
frontend and a TLS edge, on the project's own network where only the edge publishes
a port. With --external-db the database is a PostgreSQL cluster on this host
instead (a managed database outside Compose): the containers reach it through
host.docker.internal, this host at 127.0.0.1 (RELEASE_DATABASE_ADDRESS).

With --app PATH the sandbox is brought up around your own app's checkout instead of the
stand-in, to rehearse its releases: PATH is a git checkout following the documented
contract (a VERSION file, the backend and frontend Dockerfiles, its compose file
using the sandbox's variables), and its `smartrelease.env` holds its RELEASE_ keys
(service names, endpoints, keys, migrations). The sandbox never writes to PATH except
`npm ci` into its node_modules when it has a package-lock.json and none.

up is idempotent: it starts what is not running, builds only what is missing, and
(re)writes a complete .env.sandbox. With --dev it also brings up a dev environment
beside it (`.env.sandbox-dev`): its own Compose project, database, port and backups,
sharing the registry, the TLS edge's certificate and the app checkout. With --server
it also brings up the control plane (sandbox/plane.py): a Prefect server on
PostgreSQL, the environments' deployments, and a worker per environment. Settings
(SANDBOX_* environment variables) are listed in `Settings` and in docs/sandbox.md.
"""

import hashlib
import ipaddress
import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import docker
import trustme
from cryptography import x509
from dotenv import dotenv_values

from smartrelease.blocks.app_contract import AppContract
from smartrelease.blocks.envfile import Environment, name_from_env_file, parse_env_file
from smartrelease.deployments import server
from smartrelease.sandbox import identity, plane
from smartrelease.sandbox.base_image import DEPS_REPOSITORY, BaseImageError, ensure_base_image, ensure_deps_image, npm_ci
from smartrelease.local_postgres import PG_BIN, Cluster, archive_current_segment, server_dir
from smartrelease.daemon import Background
from smartrelease.errors import CommandFailed, ConfigError, StepFailed
from smartrelease.process import Command, run
from smartrelease.tasks.build_pin import build_pin
from smartrelease.adapters.http import answers
from smartrelease.adapters.images import build_image, remove_images
from smartrelease.tasks.launch import compose_up, project_compose, start_database
from smartrelease.adapters.postgres import connect
from smartrelease.tasks.readiness import wait_ready
from smartrelease.tasks.release_backup import take_backup
from smartrelease.adapters.running import app_services, project_containers, running_services

TEMPLATE = Path(__file__).parent
APP_TEMPLATE = TEMPLATE / "app"
APP_SETTINGS = "smartrelease.env"  # an --app checkout's own RELEASE_ keys
# What the sandbox decides for every app: an --app's smartrelease.env may not set these.
SANDBOX_OWNED = {"RELEASE_PRODUCTION", "RELEASE_PUBLIC_URL", "RELEASE_CA_BUNDLE", "RELEASE_COMPOSE_PROJECT",
                 "RELEASE_COMPOSE_ENV_FILE", "RELEASE_APP_DIR", "RELEASE_REGISTRY", "RELEASE_PROMOTE_FROM",
                 "RELEASE_DATABASE_ADDRESS", "RELEASE_REGISTRY_USERNAME", "RELEASE_REGISTRY_PASSWORD"}
DB_USER = DB_NAME = "smartaccounting"
DB_SERVICE = "db"
DB_PROFILE = "bundled-db"  # the compose file's profile of its db service
BUNDLED, EXTERNAL = "bundled", "external"


@dataclass
class Settings:
    """Where a sandbox lives and what it is called. A port or project left None is
    this sandbox's own: recorded in its state directory (sandbox/identity.py), or
    claimed by `up`."""

    root: Path = field(default_factory=lambda: Path(os.environ.get("SANDBOX_DIR", ".sandbox")).resolve())
    env_file: Path = field(default_factory=lambda: Path(os.environ.get("SANDBOX_ENV_FILE", ".env.sandbox")).resolve())
    project: str | None = field(default_factory=lambda: os.environ.get("SANDBOX_PROJECT") or None)
    pg_port: int | None = field(default_factory=lambda: identity.explicit_port("pg"))  # --external-db only
    registry_port: int | None = field(default_factory=lambda: identity.explicit_port("registry"))
    # Repositories are <prefix>/backend and <prefix>/frontend: sandboxes sharing a
    # registry keep their tags apart.
    image_prefix: str = field(default_factory=lambda: os.environ.get("SANDBOX_IMAGE_PREFIX", "smartaccounting"))
    edge_port: int | None = field(default_factory=lambda: identity.explicit_port("edge"))
    dev_edge_port: int | None = field(default_factory=lambda: identity.explicit_port("dev_edge"))
    server_port: int | None = field(default_factory=lambda: identity.explicit_port("server"))
    server_pg_port: int | None = field(default_factory=lambda: identity.explicit_port("server_pg"))
    app: Path | None = None  # --app: the user's own checkout instead of the stand-in
    ident: identity.Identity | None = None  # read from root; `up` claims one

    def __post_init__(self) -> None:
        self.ident = self.ident or identity.Identity.load(self.root)
        if self.ident:
            self._adopt(self.ident)

    def _adopt(self, ident: identity.Identity) -> None:
        """Fill what was not set explicitly from the sandbox's recorded identity."""
        self.project = self.project or identity.project_name(ident.id)
        for name in identity.PORTS:
            if getattr(self, f"{name}_port") is None and name in ident.ports:
                setattr(self, f"{name}_port", ident.ports[name])

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def public_url(self) -> str:
        return self.prod.public_url

    @property
    def app_dir(self) -> Path:
        return self.app or self.root / "app"

    @property
    def tls_dir(self) -> Path:
        return self.root / "tls"

    @property
    def compose_env_file(self) -> Path:
        return self.prod.compose_env_file

    @property
    def backup_dir(self) -> Path:
        return self.prod.backup_dir

    @property
    def cluster_wal_dir(self) -> Path:
        return server_dir(self.root / "wal-archive")

    def cluster(self) -> Cluster:
        """--external-db's PostgreSQL on this host: under root/ unless the server's user
        cannot reach it (see server_dir)."""
        return Cluster(server_dir(self.root / "postgres"), self.pg_port or 0, self.cluster_wal_dir)

    def plane(self) -> plane.Plane:
        """The sandbox's control plane: its own Prefect server on its own ports."""
        return plane.Plane(self.root, server.ServerSettings(
            state_dir=self.root / "prefect-server", port=self.server_port or identity.PORTS["server"][0],
            pg_port=self.server_pg_port or identity.PORTS["server_pg"][0]))

    @property
    def prod(self) -> "Stage":
        return Stage(self.env_file, self.project or "", DB_NAME, self.root / "compose.env", self.root / "backups",
                     self.root / "wal-archive", self.edge_port or 0)

    @property
    def dev(self) -> "Stage":
        return Stage(self.env_file.with_name(self.env_file.name + DEV), (self.project or "") + DEV, DB_NAME + "_dev",
                     self.root / f"compose{DEV}.env", self.root / f"backups{DEV}", self.root / f"wal-archive{DEV}",
                     self.dev_edge_port or 0)


DEV = "-dev"


@dataclass(frozen=True)
class Stage:
    """One environment of the sandbox: production, or dev beside it."""

    env_file: Path
    project: str
    db_name: str  # with --external-db: its database in the shared cluster
    compose_env_file: Path
    backup_dir: Path
    wal_dir: Path  # its db service's WAL archive (--external-db: the cluster's, shared)
    edge_port: int

    @property
    def name(self) -> str:
        return name_from_env_file(self.env_file)

    @property
    def public_url(self) -> str:
        return f"https://localhost:{self.edge_port}"


def log(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


def log_stage(stage: "Stage", msg: str) -> None:
    """A line about one environment of the sandbox (`sandbox` or `sandbox-dev`)."""
    log(f"environment {stage.name}: {msg}")


class SandboxError(Exception):
    pass


# --- pieces -----------------------------------------------------------------

def require_tools(external_db: bool) -> docker.DockerClient:
    hint = "run `sudo scripts/install-system.sh` (or `make setup`)"
    if external_db and not (PG_BIN / "initdb").exists():
        raise SandboxError(f"PostgreSQL server binaries not found in {PG_BIN}: {hint}")
    if not shutil.which("docker-registry"):
        raise SandboxError(f"docker-registry is not installed: {hint}")
    if not shutil.which("npm"):
        raise SandboxError(f"npm is not installed (the stand-in backend's packages are installed with it): {hint}")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        raise SandboxError(f"Docker Engine is not reachable: {hint}") from None
    try:
        run(Command(("docker", "compose", "version"), timeout_s=30))
    except CommandFailed:
        raise SandboxError(f"Docker Compose v2 is not installed: {hint}") from None
    return client


def load_or_make_secrets(s: Settings) -> dict[str, str]:
    """Keep the secrets of an existing .env.sandbox so data written with them stays readable."""
    old = dotenv_values(s.env_file) if s.env_file.is_file() else {}
    password = old.get("SANDBOX_DB_PASSWORD") or secrets.token_urlsafe(18)
    return {
        "SANDBOX_DB_PASSWORD": password,
        "JWT_SECRET": old.get("JWT_SECRET") or secrets.token_urlsafe(48),
        "BACKUP_PASSPHRASE": old.get("BACKUP_PASSPHRASE") or secrets.token_urlsafe(24),
        "METRICS_BASIC_AUTH_PASS": old.get("METRICS_BASIC_AUTH_PASS") or secrets.token_urlsafe(18),
    }


def checked_app(s: Settings, app: Path | None) -> Path | None:
    """--app, or the one an existing .env.sandbox was brought up with; refused when
    it names another app than the running sandbox's."""
    old = dotenv_values(s.env_file) if s.env_file.is_file() else {}
    before = Path(old["SANDBOX_APP"]) if old.get("SANDBOX_APP") else None
    wanted = Path(app).resolve() if app else (s.app or before)
    if s.env_file.is_file() and old.get("RELEASE_APP_DIR") and wanted != before and (wanted or before):
        raise SandboxError(f"this sandbox runs {before or 'the stand-in app'}, not {wanted or 'the stand-in app'}: "
                           "`smartrelease sandbox destroy` first, or use another SANDBOX_DIR and SANDBOX_ENV_FILE")
    return wanted


def database_kind(s: Settings, external_db: bool) -> str:
    """--external-db, or what an existing .env.sandbox was brought up with: a second
    `up` keeps the database where it is."""
    old = dotenv_values(s.env_file) if s.env_file.is_file() else {}
    if external_db or old.get("SANDBOX_DATABASE") == EXTERNAL:
        return EXTERNAL
    return BUNDLED


class Registry:
    """Debian's docker-registry on `addr`, state in `directory`; with `htpasswd`
    (a bcrypt htpasswd file) it requires basic auth, with `token` (realm, service,
    issuer, PEM file of the issuer's certificate) the token flow, as Docker Hub,
    GHCR, GitLab and Harbor do."""

    def __init__(self, directory: Path, addr: str, htpasswd: Path | None = None,
                 token: tuple[str, str, str, Path] | None = None):
        self.dir = directory
        self.addr = addr
        self.htpasswd = htpasswd
        self.token = token
        self.process = Background(self.dir / "registry.pid", self.dir / "registry.log")

    def pid(self) -> int | None:
        return self.process.pid()

    def answering(self) -> bool:
        return answers(f"http://{self.addr}/v2/", ok=(200, 401))

    def start(self) -> None:
        """Start it, unless a registry already answers at `addr` (this one, or one
        started elsewhere, which is then used as it is and never stopped here)."""
        if self.answering():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "config.yml"
        auth = f"auth:\n  htpasswd:\n    realm: smartrelease\n    path: {self.htpasswd}\n" if self.htpasswd else ""
        if self.token:
            realm, service, issuer, bundle = self.token
            auth = (f"auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n"
                    f"    rootcertbundle: {bundle}\n")
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {self.dir / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.addr}\n{auth}"
        )
        proc = self.process.start(["docker-registry", "serve", str(config)])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.answering():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SandboxError(f"registry did not start on {self.addr}; see {self.dir / 'registry.log'}")

    def stop(self) -> None:
        self.process.stop()


def sandbox_registry(s: Settings) -> Registry:
    return Registry(s.root / "registry", s.registry)


EDGE_CERT_DAYS = 90  # a realistic lifetime (Let's Encrypt's), so preflight's expiry figure means something
EDGE_CERT_RENEW_DAYS = 30


def _days_left(cert_pem: Path) -> float:
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return (cert.not_valid_after_utc - datetime.now(timezone.utc)).total_seconds() / 86400


def ensure_tls(s: Settings) -> None:
    """A sandbox CA and an edge certificate for localhost and 127.0.0.1, renewed
    when it has fewer than EDGE_CERT_RENEW_DAYS left."""
    s.tls_dir.mkdir(parents=True, exist_ok=True)
    ca_pem, cert_pem, key_pem = s.tls_dir / "ca.pem", s.tls_dir / "edge.pem", s.tls_dir / "edge.key"
    if ca_pem.is_file() and cert_pem.is_file() and key_pem.is_file() and _days_left(cert_pem) > EDGE_CERT_RENEW_DAYS:
        return
    ca = trustme.CA(organization_name="SmartRelease sandbox CA")
    cert = ca.issue_cert("localhost", "127.0.0.1", not_after=datetime.now(timezone.utc) + timedelta(days=EDGE_CERT_DAYS))
    ca.cert_pem.write_to_path(str(ca_pem))
    cert.private_key_pem.write_to_path(str(key_pem))
    key_pem.chmod(0o644)  # read by HAProxy inside the edge container
    with open(cert_pem, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())


def ensure_app_checkout(s: Settings) -> None:
    """The stand-in app as a git checkout (so builds have a real git SHA); its npm
    packages are in the image it starts FROM (ensure_deps_image). An --app checkout
    is checked, not copied, and gets `npm ci` into its node_modules if it has none:
    containers reach no package registry here."""
    if s.app:
        missing = [name for name in (".git", "VERSION") if not (s.app / name).exists()]
        if missing:
            raise SandboxError(f"--app {s.app} is not an app checkout: it has no {' and no '.join(missing)} "
                               "(docs/sandbox.md: a git checkout with a VERSION file)")
        if (s.app / "package-lock.json").is_file() and not (s.app / "node_modules").exists():
            npm_ci(s.app, log)
        return
    if not (s.app_dir / ".git").is_dir():
        shutil.copytree(APP_TEMPLATE, s.app_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "node_modules"))
        git = ["git", "-C", str(s.app_dir), "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost"]
        for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "stand-in SmartAccounting app")):
            run(Command((*git, *args), timeout_s=60))
    elif not (s.app_dir / "package.json").is_file():
        raise SandboxError(f"{s.app_dir} holds the stand-in app of an earlier smartrelease (before the Node.js one): "
                           "run `smartrelease sandbox destroy`, then `sandbox up`")
    elif DEPS_REPOSITORY not in (s.app_dir / "Dockerfile").read_text():
        raise SandboxError(f"{s.app_dir} holds the stand-in app of an earlier smartrelease (before its dependencies "
                           "image): run `smartrelease sandbox destroy`, then `sandbox up`")


def local_image(client: docker.DockerClient, directory: Path, repository: str, base: str) -> str:
    """`directory` built on `base` as `repository:<hash of its files and base>`, unless
    that image exists: a changed Dockerfile, entrypoint or base gets a new image, an
    unchanged one is reused."""
    digest = hashlib.sha256(client.images.get(base).id.encode())
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
    tag = f"{repository}:{digest.hexdigest()[:12]}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        build_image(client, directory, tag, build_args={"BASE_IMAGE": base})
    return tag


def docker_host_gateway(client: docker.DockerClient) -> str:
    """The address `host.docker.internal:host-gateway` gives containers: the default bridge's gateway."""
    config = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    # Older engines leave Gateway out: the bridge takes its subnet's first address.
    return config.get("Gateway") or str(ipaddress.ip_network(config["Subnet"])[1])


def app_settings(s: Settings) -> dict[str, str]:
    """An --app checkout's RELEASE_ keys (its smartrelease.env), its compose file's
    path made absolute; {} for the stand-in."""
    if not s.app:
        return {}
    path = s.app / APP_SETTINGS
    values = {k: v for k, v in (dotenv_values(path) if path.is_file() else {}).items() if v is not None}
    if owned := sorted(k for k in values if k in SANDBOX_OWNED or not k.startswith("RELEASE_")):
        raise SandboxError(f"{path}: {', '.join(owned)} cannot be set there: the sandbox sets them (docs/sandbox.md lists "
                           "what an app's smartrelease.env may hold)")
    values["RELEASE_COMPOSE_FILE"] = str(s.app / values.get("RELEASE_COMPOSE_FILE", "docker-compose.prod.yml"))
    return values


def env_file_text(s: Settings, stage: Stage, sec: dict[str, str], kind: str) -> str:
    app = app_settings(s)
    if kind == BUNDLED:
        # The app's view: db on the project's network. This host reaches it at the db
        # container's address (RELEASE_DATABASE_SERVICE), read from Docker Engine.
        service = app.get("RELEASE_DATABASE_SERVICE", DB_SERVICE)
        database = {"DATABASE_URL": f"postgresql://{DB_USER}:{sec['SANDBOX_DB_PASSWORD']}@{service}:5432/{DB_NAME}",
                    "WAL_ARCHIVE_DIR": str(stage.wal_dir), "RELEASE_DATABASE_SERVICE": service}
    else:
        # A database outside Compose: the containers reach this host's cluster through
        # host.docker.internal, this host at 127.0.0.1.
        database = {"DATABASE_URL": f"postgresql://{DB_USER}:{sec['SANDBOX_DB_PASSWORD']}@host.docker.internal:"
                                    f"{s.pg_port}/{stage.db_name}",
                    "WAL_ARCHIVE_DIR": str(s.cluster_wal_dir), "RELEASE_DATABASE_ADDRESS": f"127.0.0.1:{s.pg_port}"}
    values = {
        "NODE_ENV": "production",
        "DATABASE_URL": database.pop("DATABASE_URL"),
        "JWT_SECRET": sec["JWT_SECRET"],
        "FRONTEND_URL": stage.public_url,
        "CLIENT_URL": stage.public_url,
        "CORS_ORIGIN": stage.public_url,
        "BACKUP_PASSPHRASE": sec["BACKUP_PASSPHRASE"],
        "ALLOW_PROD_MIGRATIONS": "true",
        "BACKUP_DIR": str(stage.backup_dir),
        "WAL_ARCHIVE_DIR": database.pop("WAL_ARCHIVE_DIR"),
        "METRICS_BASIC_AUTH_USER": "metrics",
        "METRICS_BASIC_AUTH_PASS": sec["METRICS_BASIC_AUTH_PASS"],
        "RELEASE_PRODUCTION": "true",
        # Production-like, but its releases are not held for a person (the demo asks for one).
        "RELEASE_APPROVAL": "none",
        "RELEASE_PUBLIC_URL": stage.public_url,
        "RELEASE_CA_BUNDLE": str(s.tls_dir / "ca.pem"),
        "RELEASE_COMPOSE_FILE": str(s.app_dir / "docker-compose.prod.yml"),
        "RELEASE_COMPOSE_PROJECT": stage.project,
        "RELEASE_COMPOSE_ENV_FILE": str(stage.compose_env_file),
        "RELEASE_APP_DIR": str(s.app_dir),
        "RELEASE_REGISTRY": s.registry,
        # The sandbox's edge finds and checks containers every 500 ms (sandbox/edge/).
        "RELEASE_EDGE_SETTLE_S": "1",
        "RELEASE_BACKEND_IMAGE": f"{s.image_prefix}/backend",
        "RELEASE_FRONTEND_IMAGE": f"{s.image_prefix}/frontend",
        **database,
        # Promotion into production asks the dev environment's history for evidence.
        "RELEASE_PROMOTE_FROM": s.dev.name,
        # The stand-in's metrics are internal, as the runbook has it: the edge does not route them.
        **(app or {"RELEASE_METRICS_URL": "http://backend:8080/metrics"}),
        # Kept so a second `sandbox up` reuses the database password, topology and app.
        "SANDBOX_DB_PASSWORD": sec["SANDBOX_DB_PASSWORD"],
        "SANDBOX_DATABASE": kind,
        **({"SANDBOX_APP": str(s.app)} if s.app else {}),
    }
    if kind == EXTERNAL:
        values.pop("RELEASE_DATABASE_SERVICE", None)
    return "# Written by `smartrelease sandbox up`. Holds secrets: keep it 0600.\n" + "".join(f"{k}={v}\n" for k, v in values.items())


def compose_env_text(s: Settings, stage: Stage, kind: str, images: dict[str, str]) -> str:
    """The sandbox deployment's own, non-secret compose variables (RELEASE_COMPOSE_ENV_FILE)."""
    values = {"EDGE_IMAGE": images["edge"], "DB_IMAGE": images["db"], "EDGE_TLS_DIR": str(s.tls_dir),
              "EDGE_PORT": stage.edge_port}
    if kind == BUNDLED:
        values["COMPOSE_PROFILES"] = DB_PROFILE
    return "# Written by `smartrelease sandbox up`.\n" + "".join(f"{k}={v}\n" for k, v in values.items())


def deploy_checkout(env: Environment) -> str:
    """First deploy of an empty sandbox: the checkout's version, built and pushed
    if the registry lacks it, launched and waited for. Releases go through the flow."""
    version = (Path(env.target.app_dir) / "VERSION").read_text().strip()
    pinned = build_pin(env, version)
    compose_up(env, {service: image.ref for service, image in pinned.images.items()})
    wait_ready(env)
    return version


def archive_current_wal(env: Environment) -> str:
    """Ship the current WAL segment, so that preflight's wal-archive check finds one
    (the app's user is the database's superuser, as with the postgres image)."""
    with connect(env, "sandbox") as conn:
        try:
            return archive_current_segment(conn)
        except TimeoutError as exc:
            raise SandboxError(f"{exc}: see the db service's log") from None


def up_stage(s: Settings, stage: Stage, sec: dict[str, str], client: docker.DockerClient, kind: str,
             images: dict[str, str]) -> None:
    """One environment: its database, env files, app (deployed from the checkout when
    not running) and a fresh backup."""
    if kind == EXTERNAL:
        s.cluster().ensure_app_database(DB_USER, sec["SANDBOX_DB_PASSWORD"], stage.db_name)
    else:
        stage.wal_dir.mkdir(parents=True, exist_ok=True)
        stage.wal_dir.chmod(0o777)  # written by the db container's postgres user, read and cleared by ours
    stage.backup_dir.mkdir(parents=True, exist_ok=True)
    stage.env_file.write_text(env_file_text(s, stage, sec, kind))
    stage.env_file.chmod(0o600)
    stage.compose_env_file.write_text(compose_env_text(s, stage, kind, images))
    env = parse_env_file(stage.env_file)
    if kind == BUNDLED:
        start_database(env)
        record_database(s, stage)

    running = {n: c for n, c in running_services(client, env).items() if c.status == "running"}
    app = app_services(env, running)
    if {"backend", "frontend"} <= set(app) and "edge" in running:
        version = app["backend"].image_labels.get("org.opencontainers.image.version", "?")
        log_stage(stage, f"app {version} already running; left as it is (releases go through `smartrelease release`)")
    else:
        version = deploy_checkout(env)
        log_stage(stage, f"app {version} deployed from the checkout")
    log_stage(stage, f"serving at {stage.public_url}")
    backup = take_backup(env, version, "sandbox")
    if kind == EXTERNAL:
        s.cluster().switch_wal()
    else:
        archive_current_wal(env)
    log_stage(stage, f"backup {backup.name}; wrote {stage.env_file}")


def claim(s: Settings, client: docker.DockerClient, stages: tuple[Stage, ...], kind: str) -> list[str]:
    """This sandbox's id, projects and ports: those recorded in its state directory,
    or new ones (a default port another process holds moves to a free one). Refuses
    a database volume this sandbox did not create. Changes nothing but the record,
    and writes that only once every check passed. Returns the lines to show."""
    ident = s.ident or identity.Identity(identity.new_id())
    said, fresh = [], s.ident is None
    s._adopt(ident)
    for name in identity.PORTS:
        if getattr(s, f"{name}_port") is None:
            port, line = identity.claim_port(name, client)
            setattr(s, f"{name}_port", port)
            said += [line] if line else []
        ident.ports[name] = getattr(s, f"{name}_port")
    ours = {st.project for st in (s.prod, s.dev)}
    if fresh:
        # The projects an env file here names from an earlier sandbox (its state
        # deleted), and any sandbox project whose state directory is gone.
        earlier = {dotenv_values(st.env_file).get("RELEASE_COMPOSE_PROJECT") for st in (s.prod, s.dev)
                   if st.env_file.is_file()}
        projects = sorted(({p for p in earlier if p} | set(identity.orphaned_projects(client, ours))) - ours)
        for project in projects:
            if found := identity.leftover_of(client, project, "its state directory is gone"):
                said.append(found.line())
                if project in earlier:
                    ident.leftovers.append(project)
    if kind == BUNDLED:
        for stage in stages:
            volumes = identity.project_resources(client, stage.project).volumes
            if volumes and stage.project not in ident.databases:
                names = " ".join(v.name for v in volumes)
                raise SandboxError(f"volume {names} holds a database this sandbox did not create (Compose project "
                                   f"{stage.project}, another sandbox's or one whose state was deleted), so its "
                                   f"password is not the one in {stage.env_file.name}: remove it with "
                                   f"`docker volume rm {names}` if it is a leftover, or set another SANDBOX_PROJECT")
    s.ident = ident
    ident.save(s.root)
    return said


def record_database(s: Settings, stage: Stage) -> None:
    """The stage's database volume is this sandbox's: a later `up` may reuse it."""
    if s.ident and stage.project not in s.ident.databases:
        s.ident.databases.append(stage.project)
        s.ident.save(s.root)


# --- commands ---------------------------------------------------------------

def up(s: Settings | None = None, dev: bool = False, external_db: bool = False, app: Path | None = None,
       server: bool = False) -> int:
    s = s or Settings()
    try:
        s.app = checked_app(s, app)
        kind = database_kind(s, external_db)
        client = require_tools(kind == EXTERNAL)
        stages_wanted = ("prod", "dev") if dev else ("prod",)
        for line in claim(s, client, tuple(getattr(s, st) for st in stages_wanted), kind):
            log(line)
        sec = load_or_make_secrets(s)

        if kind == EXTERNAL:
            cluster = s.cluster()
            cluster.init(listen=docker_host_gateway(client))
            cluster.start()
            log(f"PostgreSQL on 127.0.0.1:{s.pg_port} (and the Docker bridge), WAL archived to {s.cluster_wal_dir}")

        sandbox_registry(s).start()
        log(f"registry on {s.registry}")

        ensure_tls(s)
        ensure_app_checkout(s)
        base = ensure_base_image(client, log)
        if not s.app:
            ensure_deps_image(client, s.app_dir, log)
        images = {"edge": local_image(client, TEMPLATE / "edge", "smartrelease-sandbox/edge", base),
                  "db": local_image(client, TEMPLATE / "db", "smartrelease-sandbox/postgres", base)}
        stages = tuple(getattr(s, st) for st in stages_wanted)
        for stage in stages:
            up_stage(s, stage, sec, client, kind, images)
        if server:
            for line in plane.up(s.plane(), {stage.name: stage.env_file for stage in stages}):
                log(line)
        print(f"sandbox is up: smartrelease preflight --env-file {os.path.relpath(s.env_file)}"
              + (f" (dev: --env-file {os.path.relpath(s.dev.env_file)})" if dev else ""))
        return 0
    except (SandboxError, ConfigError, StepFailed, CommandFailed, BaseImageError) as exc:
        print(f"smartrelease: sandbox: {exc}", file=sys.stderr)
        return 2


def down(s: Settings | None = None, *, keeping_state: bool = True) -> int:
    s = s or Settings()
    for line in plane.down(s.plane()):  # the workers first: no run starts on a stopping sandbox
        log(line)
    for stage in (s.dev, s.prod):
        if not stage.env_file.is_file():
            continue
        env = parse_env_file(stage.env_file)
        if not (env.target.compose_env_file and Path(env.target.compose_env_file).is_file()):
            # Its state directory was deleted: Compose cannot read the project's
            # variables any more, so remove its containers by the project label.
            identity.project_resources(docker.from_env(), env.target.compose_project or stage.project).remove(
                volumes=not keeping_state)
            log_stage(stage, "containers removed (its compose env file was gone)")
            continue
        if env.target.compose_file and Path(env.target.compose_file).is_file():
            # The db service's volume goes only with the rest of the state.
            run(project_compose(env).down(volumes=not keeping_state))
            log_stage(stage, "containers removed" + ("" if keeping_state else ", with the database's volume"))
    sandbox_registry(s).stop()
    s.cluster().stop()
    log("registry stopped" + (f"; state kept in {s.root} (`sandbox destroy` deletes it)" if keeping_state else ""))
    return 0


def destroy(s: Settings | None = None) -> int:
    """down, then delete everything the sandbox wrote: its state directory, the
    database volumes, the PostgreSQL files wherever they had to live, and the env files."""
    s = s or Settings()
    cluster = s.cluster()
    down(s, keeping_state=False)
    plane.destroy(s.plane())
    client = docker.from_env()
    for project in s.ident.leftovers if s.ident else ():  # an earlier sandbox's here, named by `up`
        identity.project_resources(client, project).remove()
        log(f"removed what the earlier sandbox here left behind (Compose project {project})")
    # The images it built and pushed (each release leaves two): runs of `make test`
    # left thousands, and Docker Engine slows with them.
    images = remove_images(client, f"{s.registry}/{s.image_prefix}/", f"{s.project}-")
    cluster.destroy()
    for path in (s.root, cluster.root, s.cluster_wal_dir):
        shutil.rmtree(path, ignore_errors=True)
    for path in (s.env_file, s.dev.env_file):
        path.unlink(missing_ok=True)
    log(f"deleted {s.root}, the env files {s.env_file.name}, {s.dev.env_file.name} and {images} image tag(s) "
        f"of {s.registry}/{s.image_prefix}/")
    return 0


def status(s: Settings | None = None) -> int:
    s = s or Settings()
    registry = sandbox_registry(s)
    try:
        client = docker.from_env()
        running = {c.labels.get("com.docker.compose.service"): c.status
                   for c in project_containers(client, s.project)}
    except docker.errors.DockerException:
        running = {}
    contract = parse_env_file(s.env_file).target if s.env_file.is_file() else AppContract()
    external = database_kind(s, False) == EXTERNAL
    db = contract.database_service or DB_SERVICE
    parts = {
        "postgres": (s.cluster().initialized and s.cluster().running()) if external else running.get(db) == "running",
        "registry": registry.answering(),
    }
    for name, service in (("backend", contract.backend_service), ("frontend", contract.frontend_service)):
        parts[name] = running.get(service) == "running"
    # Whatever else the compose file runs (the edge).
    others = sorted(set(running) - {db, contract.backend_service, contract.frontend_service}) or ["edge"]
    for service in others:
        parts[service] = running.get(service) == "running"
    parts.update(plane.status(s.plane()))  # with --server
    width = max(9, *(len(name) + 1 for name in parts))
    for name, ok in parts.items():
        print(f"{name:{width}} {'up' if ok else 'down'}")
    return 0 if all(parts.values()) else 1
