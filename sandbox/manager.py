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
from pathlib import Path

import docker
from dotenv import dotenv_values

from smartrelease.blocks.app_contract import AppContract
from smartrelease.blocks.envfile import Environment, parse_env_file
from smartrelease.sandbox import identity, plane
from smartrelease.sandbox.envfiles import compose_env_text, env_file_text
from smartrelease.sandbox.registry import sandbox_registry
from smartrelease.sandbox.settings import (APP_TEMPLATE, BUNDLED, DB_SERVICE, DB_USER, EXTERNAL, TEMPLATE, SandboxError,
                                           Settings, Stage, log, log_stage)
from smartrelease.sandbox.tls import ensure_tls
from smartrelease.sandbox.base_image import DEPS_REPOSITORY, BaseImageError, ensure_base_image, ensure_deps_image, npm_ci
from smartrelease.local_postgres import PG_BIN, archive_current_segment
from smartrelease.errors import CommandFailed, ConfigError, StepFailed
from smartrelease.process import Command, run
from smartrelease.tasks.build_pin import build_pin
from smartrelease.adapters.images import build_image, remove_images
from smartrelease.tasks.launch import compose_up, project_compose, start_database
from smartrelease.adapters.postgres import connect
from smartrelease.tasks.readiness import wait_ready
from smartrelease.tasks.backup.take import take_backup
from smartrelease.adapters.running import app_services, project_containers, running_services


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
