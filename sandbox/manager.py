"""`smartrelease sandbox up [--dev]|down|status`: production on one machine.

up is idempotent: it starts what is not running, builds only what is missing, and
(re)writes a complete .env.sandbox. With --dev it also brings up a dev environment
beside it (`.env.sandbox-dev`): its own Compose project, database, ports and backups,
sharing the registry, the PostgreSQL cluster, the TLS edge's certificate and the app
checkout. Settings (SANDBOX_* environment variables) are listed in `Settings` and in
the README.
"""

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import docker
import httpx
import trustme
from cryptography import x509
from dotenv import dotenv_values

from blocks.envfile import Environment, name_from_env_file, parse_env_file
from sandbox.base_image import BaseImageError, ensure_base_image
from sandbox.postgres import PG_BIN, Cluster, server_dir
from smartrelease.errors import CommandFailed, ConfigError, StepFailed
from smartrelease.process import Command, run
from tasks.backup_files import dump_database_encrypted
from tasks.build_pin import build_pin
from tasks.images import build_image
from tasks.launch import compose_up, project_compose
from tasks.readiness import wait_ready
from tasks.running import project_containers, running_services

TEMPLATE = Path(__file__).parent
APP_TEMPLATE = TEMPLATE / "app"
EDGE_IMAGE = "smartrelease-sandbox/edge:local"
DB_USER = DB_NAME = "smartaccounting"


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass
class Settings:
    root: Path = field(default_factory=lambda: Path(os.environ.get("SANDBOX_DIR", ".sandbox")).resolve())
    env_file: Path = field(default_factory=lambda: Path(os.environ.get("SANDBOX_ENV_FILE", ".env.sandbox")).resolve())
    project: str = field(default_factory=lambda: os.environ.get("SANDBOX_PROJECT", "smartaccounting-sandbox"))
    pg_port: int = field(default_factory=lambda: _env_int("SANDBOX_PG_PORT", 55432))
    registry_port: int = field(default_factory=lambda: _env_int("SANDBOX_REGISTRY_PORT", 5001))
    backend_port: int = field(default_factory=lambda: _env_int("SANDBOX_BACKEND_PORT", 18080))
    frontend_port: int = field(default_factory=lambda: _env_int("SANDBOX_FRONTEND_PORT", 18081))
    edge_port: int = field(default_factory=lambda: _env_int("SANDBOX_EDGE_PORT", 18443))
    dev_backend_port: int = field(default_factory=lambda: _env_int("SANDBOX_DEV_BACKEND_PORT", 18090))
    dev_frontend_port: int = field(default_factory=lambda: _env_int("SANDBOX_DEV_FRONTEND_PORT", 18091))
    dev_edge_port: int = field(default_factory=lambda: _env_int("SANDBOX_DEV_EDGE_PORT", 18453))

    @property
    def registry(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def public_url(self) -> str:
        return self.prod.public_url

    @property
    def app_dir(self) -> Path:
        return self.root / "app"

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
    def wal_dir(self) -> Path:
        return server_dir(self.root / "wal-archive")

    def cluster(self) -> Cluster:
        # Under root/ unless the server's user cannot reach it (see server_dir).
        return Cluster(server_dir(self.root / "postgres"), self.pg_port, self.wal_dir)

    @property
    def prod(self) -> "Stage":
        return Stage(self.env_file, self.project, DB_NAME, self.root / "compose.env", self.root / "backups",
                     self.backend_port, self.frontend_port, self.edge_port)

    @property
    def dev(self) -> "Stage":
        return Stage(self.env_file.with_name(self.env_file.name + DEV), self.project + DEV, DB_NAME + "_dev",
                     self.root / f"compose{DEV}.env", self.root / f"backups{DEV}",
                     self.dev_backend_port, self.dev_frontend_port, self.dev_edge_port)


DEV = "-dev"


@dataclass(frozen=True)
class Stage:
    """One environment of the sandbox: production, or dev beside it."""

    env_file: Path
    project: str
    db_name: str
    compose_env_file: Path
    backup_dir: Path
    backend_port: int
    frontend_port: int
    edge_port: int

    @property
    def name(self) -> str:
        return name_from_env_file(self.env_file)

    @property
    def public_url(self) -> str:
        return f"https://localhost:{self.edge_port}"


def log(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


class SandboxError(Exception):
    pass


# --- pieces -----------------------------------------------------------------

def require_tools() -> docker.DockerClient:
    hint = "run `sudo scripts/install-system.sh` (or `make setup`)"
    if not (PG_BIN / "initdb").exists():
        raise SandboxError(f"PostgreSQL server binaries not found in {PG_BIN}: {hint}")
    if not shutil.which("docker-registry"):
        raise SandboxError(f"docker-registry is not installed: {hint}")
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
        self.pidfile = self.dir / "registry.pid"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def answering(self) -> bool:
        try:
            return httpx.get(f"http://{self.addr}/v2/", timeout=2).status_code in (200, 401)
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        if self.pid() and self.answering():
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
        with open(self.dir / "registry.log", "ab") as out:
            proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=out, start_new_session=True)
        self.pidfile.write_text(str(proc.pid))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.answering():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SandboxError(f"registry did not start on {self.addr}; see {self.dir / 'registry.log'}")

    def stop(self) -> None:
        if pid := self.pid():
            os.kill(pid, signal.SIGTERM)
        self.pidfile.unlink(missing_ok=True)


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
    key_pem.chmod(0o644)  # read by nginx inside the edge container
    with open(cert_pem, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())


def ensure_app_checkout(s: Settings) -> None:
    """The stand-in app as a git checkout, so builds have a real git SHA."""
    if (s.app_dir / ".git").is_dir():
        return
    shutil.copytree(APP_TEMPLATE, s.app_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-C", str(s.app_dir), "-c", "user.name=sandbox", "-c", "user.email=sandbox@localhost"]
    for args in (("init", "-q", "-b", "main"), ("add", "-A"), ("commit", "-q", "-m", "stand-in SmartAccounting app")):
        run(Command((*git, *args), timeout_s=60))


def env_file_text(s: Settings, stage: Stage, sec: dict[str, str]) -> str:
    cluster = s.cluster()
    values = {
        "NODE_ENV": "production",
        "DATABASE_URL": cluster.dsn(DB_USER, sec["SANDBOX_DB_PASSWORD"], stage.db_name),
        "JWT_SECRET": sec["JWT_SECRET"],
        "FRONTEND_URL": stage.public_url,
        "CLIENT_URL": stage.public_url,
        "CORS_ORIGIN": stage.public_url,
        "BACKUP_PASSPHRASE": sec["BACKUP_PASSPHRASE"],
        "ALLOW_PROD_MIGRATIONS": "true",
        "BACKUP_DIR": str(stage.backup_dir),
        "WAL_ARCHIVE_DIR": str(s.wal_dir),
        "METRICS_BASIC_AUTH_USER": "metrics",
        "METRICS_BASIC_AUTH_PASS": sec["METRICS_BASIC_AUTH_PASS"],
        "RELEASE_PRODUCTION": "true",
        "RELEASE_PUBLIC_URL": stage.public_url,
        "RELEASE_CA_BUNDLE": str(s.tls_dir / "ca.pem"),
        "RELEASE_COMPOSE_FILE": str(s.app_dir / "docker-compose.prod.yml"),
        "RELEASE_COMPOSE_PROJECT": stage.project,
        "RELEASE_COMPOSE_ENV_FILE": str(stage.compose_env_file),
        "RELEASE_APP_DIR": str(s.app_dir),
        "RELEASE_REGISTRY": s.registry,
        "RELEASE_BACKEND_IMAGE": "smartaccounting/backend",
        "RELEASE_FRONTEND_IMAGE": "smartaccounting/frontend",
        # Promotion into production asks the dev environment's history for evidence.
        "RELEASE_PROMOTE_FROM": s.dev.name,
        # Kept so a second `sandbox up` reuses the database password.
        "SANDBOX_DB_PASSWORD": sec["SANDBOX_DB_PASSWORD"],
    }
    return "# Written by `smartrelease sandbox up`. Holds secrets: keep it 0600.\n" + "".join(f"{k}={v}\n" for k, v in values.items())


def compose_env_text(s: Settings, stage: Stage) -> str:
    """The sandbox deployment's own, non-secret compose variables (RELEASE_COMPOSE_ENV_FILE)."""
    values = {"EDGE_IMAGE": EDGE_IMAGE, "EDGE_TLS_DIR": str(s.tls_dir), "BACKEND_PORT": stage.backend_port,
              "FRONTEND_PORT": stage.frontend_port, "EDGE_PORT": stage.edge_port}
    return "# Written by `smartrelease sandbox up`.\n" + "".join(f"{k}={v}\n" for k, v in values.items())


def deploy_checkout(env: Environment) -> str:
    """First deploy of an empty sandbox: the checkout's version, built and pushed
    if the registry lacks it, launched and waited for. Releases go through the flow."""
    version = (Path(env.target.app_dir) / "VERSION").read_text().strip()
    pinned = build_pin(env, version)
    compose_up(env, {service: image.ref for service, image in pinned.images.items()})
    wait_ready(env)
    return version


def take_backup(s: Settings, stage: Stage, sec: dict[str, str], version: str) -> Path:
    """An encrypted pg_dump (BACKUP_PASSPHRASE), as the release's own backups are."""
    stage.backup_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = stage.backup_dir / f"{stage.name}-{version}-{stamp}.dump.enc"
    dump_database_encrypted("127.0.0.1", s.pg_port, DB_USER, sec["SANDBOX_DB_PASSWORD"], stage.db_name,
                            target, sec["BACKUP_PASSPHRASE"])
    return target


def up_stage(s: Settings, stage: Stage, sec: dict[str, str], client: docker.DockerClient) -> None:
    """One environment: its database, env files, app (deployed from the checkout when
    not running) and a fresh backup."""
    cluster = s.cluster()
    cluster.ensure_app_database(DB_USER, sec["SANDBOX_DB_PASSWORD"], stage.db_name)
    stage.env_file.write_text(env_file_text(s, stage, sec))
    stage.env_file.chmod(0o600)
    stage.compose_env_file.write_text(compose_env_text(s, stage))
    env = parse_env_file(stage.env_file)

    running = running_services(client, env)
    if {"backend", "frontend", "edge"} <= {n for n, c in running.items() if c.status == "running"}:
        version = running["backend"].labels.get("org.opencontainers.image.version", "?")
        log(f"{stage.name}: app {version} already running; left as it is (releases go through `smartrelease release`)")
    else:
        version = deploy_checkout(env)
        log(f"{stage.name}: app {version} deployed from the checkout")
    log(f"{stage.name}: serving at {stage.public_url}")
    backup = take_backup(s, stage, sec, version)
    log(f"{stage.name}: backup {backup.name}; wrote {stage.env_file}")


# --- commands ---------------------------------------------------------------

def up(s: Settings | None = None, dev: bool = False) -> int:
    s = s or Settings()
    try:
        client = require_tools()
        s.root.mkdir(parents=True, exist_ok=True)
        sec = load_or_make_secrets(s)

        cluster = s.cluster()
        cluster.init()
        cluster.start()
        log(f"PostgreSQL on 127.0.0.1:{s.pg_port}, WAL archived to {s.wal_dir}")

        sandbox_registry(s).start()
        log(f"registry on {s.registry}")

        ensure_tls(s)
        ensure_app_checkout(s)
        base = ensure_base_image(client, log)
        try:
            client.images.get(EDGE_IMAGE)
        except docker.errors.ImageNotFound:
            build_image(client, TEMPLATE / "edge", EDGE_IMAGE, build_args={"BASE_IMAGE": base})
        for stage in (s.prod, s.dev) if dev else (s.prod,):
            up_stage(s, stage, sec, client)
        cluster.switch_wal()
        print(f"sandbox is up: smartrelease preflight --env-file {os.path.relpath(s.env_file)}"
              + (f" (dev: --env-file {os.path.relpath(s.dev.env_file)})" if dev else ""))
        return 0
    except (SandboxError, ConfigError, StepFailed, CommandFailed, BaseImageError) as exc:
        print(f"smartrelease: sandbox: {exc}", file=sys.stderr)
        return 2


def down(s: Settings | None = None, *, keeping_state: bool = True) -> int:
    s = s or Settings()
    for stage in (s.dev, s.prod):
        if not stage.env_file.is_file():
            continue
        env = parse_env_file(stage.env_file)
        if not (env.target.compose_env_file and Path(env.target.compose_env_file).is_file()):
            # Its state directory was deleted: Compose cannot read the project's
            # variables any more, so remove its containers by the project label.
            for c in project_containers(docker.from_env(), stage.project):
                c.remove(force=True)
            log(f"{stage.name}: containers removed (its compose env file was gone)")
            continue
        if env.target.compose_file and Path(env.target.compose_file).is_file():
            run(project_compose(env, {"backend": "none", "frontend": "none"}).down())
            log(f"{stage.name}: containers removed")
    sandbox_registry(s).stop()
    s.cluster().stop()
    log("registry and PostgreSQL stopped" + (f"; state kept in {s.root} (`sandbox destroy` deletes it)"
                                             if keeping_state else ""))
    return 0


def destroy(s: Settings | None = None) -> int:
    """down, then delete everything the sandbox wrote: its state directory, the
    PostgreSQL files wherever they had to live, and the env files."""
    s = s or Settings()
    cluster = s.cluster()
    down(s, keeping_state=False)
    cluster.destroy()
    for path in (s.root, cluster.root, s.wal_dir):
        shutil.rmtree(path, ignore_errors=True)
    for path in (s.env_file, s.dev.env_file):
        path.unlink(missing_ok=True)
    log(f"deleted {s.root} and the env files {s.env_file.name}, {s.dev.env_file.name}")
    return 0


def status(s: Settings | None = None) -> int:
    s = s or Settings()
    registry = sandbox_registry(s)
    parts = {
        "postgres": s.cluster().initialized and s.cluster().running(),
        "registry": registry.answering(),
    }
    try:
        client = docker.from_env()
        running = {c.labels.get("com.docker.compose.service"): c.status
                   for c in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={s.project}"})}
    except docker.errors.DockerException:
        running = {}
    for service in ("backend", "frontend", "edge"):
        parts[service] = running.get(service) == "running"
    for name, ok in parts.items():
        print(f"{name:9} {'up' if ok else 'down'}")
    return 0 if all(parts.values()) else 1
