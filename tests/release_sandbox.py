"""Sandboxes for the end-to-end tests (their own ports, projects and sentinel
secrets), with the helpers the tests use to ship versions and look at the result.

`shared_sandbox` (tests/conftest.py) is one sandbox in the runbook's topology for
every module whose tests leave it verified on their last release; `module_sandbox`
gives a module one of its own (the promotion's dev and prod, on a database outside
Compose)."""

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import docker
from psycopg import sql

from smartrelease.blocks import load_environment
from smartrelease.record.lock import import_environment
from smartrelease.record.history import last_release
from smartrelease.flows.release import release
from smartrelease.sandbox import manager
from smartrelease.sandbox.registry import Registry
from smartrelease.sandbox.app_changes import commit_version
from smartrelease.sandbox.stacks import set_keys
from smartrelease.process import run
from smartrelease.report import Report
from smartrelease.tasks.launch import compose_up, project_compose
from smartrelease.adapters.postgres import connect
from smartrelease.tasks.readiness import wait_ready
from smartrelease.tasks.rollback_plan import running_deployment
from smartrelease.adapters.running import PROJECT_LABEL, compose_labels, containers, running_services
from tests.conftest import (BACKUP_PASSPHRASE, DB_PASSWORD, JWT_SECRET, METRICS_PASS, SENTINELS, assert_no_secret,
                            free_port, few_sandboxes_coming_up, stored, unique)


def run_swept(flow, **parameters) -> tuple[object, Report]:
    """Run a flow; every run, passing or failing, is swept for the sentinel secrets."""
    state = flow(return_state=True, **parameters)
    report = state.result(raise_on_failure=False)
    assert isinstance(report, Report), report
    texts = stored(state.state_details.flow_run_id)
    assert_no_secret({**texts, "report": report.model_dump_json() + report.markdown() + report.text()}, SENTINELS,
                     f"of {flow.name} {parameters}")
    return state, report


def release_by_hand(environment: str, app_dir: Path, version: str) -> dict[str, str]:
    """The runbook by hand: commit `version` to the checkout, then `docker compose up -d
    --build` with the environment's compose file as it is (Compose builds the images:
    no OCI labels, nothing pushed); {role: the image Compose built}."""
    sha = commit_version(app_dir, version)
    env = load_environment(environment)
    built = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    run(project_compose(env).without_override().with_variables(
        {"APP_VERSION": version, "GIT_SHA": sha, "BUILD_TIME": built}).up(build=True))
    wait_ready(env)
    return {role: f"{env.target.compose_project}-{env.target.service(role)}" for role in ("backend", "frontend")}


class Sandbox:
    def __init__(self, settings: manager.Settings, name: str):
        self.settings = settings
        self.app_dir = settings.app_dir
        self.name = name
        self.initial = running_deployment(self.env())  # what `sandbox up` deployed

    def env(self):
        return load_environment(self.name)

    def set_env(self, key: str, value: str | None) -> None:
        """Change one key of the env file (None removes it) and import it again."""
        set_keys(self.settings.env_file, {key: value})
        import_environment(self.settings.env_file, self.name)

    def env_file_for(self, name: str, directory: Path, **changes: str) -> Path:
        """This sandbox's env file copied for environment `name` with `changes` over its
        keys, private (0600, as preflight asks), and imported as blocks `name`."""
        lines = [line for line in self.settings.env_file.read_text().splitlines()
                 if line.partition("=")[0] not in changes]
        path = directory / f".env.{name}"
        path.write_text("\n".join([*lines, *(f"{k}={v}" for k, v in changes.items())]) + "\n")
        path.chmod(0o600)
        import_environment(path, name)
        return path

    @contextmanager
    def beside(self, name: str, directory: Path, **changes: str):
        """Environment `name` on this sandbox (`env_file_for`), its env file's path; on
        leaving, this sandbox's own last release is put back, for the next module."""
        try:
            yield self.env_file_for(name, directory, **changes)
        finally:
            self.restore_last_good()

    def release(self, version: str, files=None, faults=None, **parameters) -> tuple[object, Report, str]:
        """Commit `version` to the checkout and release it; (state, report, git SHA)."""
        sha = commit_version(self.app_dir, version, files, faults)
        state = release(**{"environment": self.name, **parameters}, return_state=True)
        report = state.result(raise_on_failure=False)
        assert isinstance(report, Report), report
        return state, report, sha

    def containers(self) -> dict[str, tuple[str, str]]:
        return {n: (s.id, s.image_id) for n, s in running_services(docker.from_env(), self.env()).items()}

    def app_images(self) -> dict[str, str]:
        """The image id each app service (backend, frontend) runs."""
        return {service: image for service, (_, image) in self.containers().items() if service in ("backend", "frontend")}

    def schema(self) -> tuple:
        with connect(self.env(), "test") as conn:
            columns = conn.execute(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2").fetchall()
            meta = conn.execute('SELECT name FROM "SequelizeMeta" ORDER BY name').fetchall()
        return columns, meta

    def env_running_version(self) -> str | None:
        """The version label of the backend running now."""
        return running_services(docker.from_env(), self.env())["backend"].image_labels.get("org.opencontainers.image.version")

    def db_container(self) -> str | None:
        """The id of the db service's container (None with a database outside Compose)."""
        found = containers(docker.from_env(), *compose_labels(self.settings.project, "db"))
        return found[0].id if found else None

    def _own_containers(self, status: str) -> list:
        """Containers of this sandbox's Compose projects (its own, its dev one, those of
        the environments a module adds beside it: all named after its project), the
        edge last."""
        client = docker.from_env()
        # Every run's on this machine, some being removed meanwhile: containers() skips those.
        found = [c for c in containers(client, PROJECT_LABEL, status=status)
                 if c.labels["com.docker.compose.project"].startswith(self.settings.project)]
        return sorted(found, key=lambda c: c.labels.get("com.docker.compose.service") == "edge")

    def pause(self) -> None:
        """Freeze every container between the modules that use this sandbox. Docker runs
        no health check on a paused container (nor counts the one in flight), and the
        checks every 2 s were most of an idle sandbox's CPU (6.4 s a minute)."""
        for c in reversed(self._own_containers("running")):  # the edge first: it sees no backend frozen
            c.pause()

    def resume(self) -> None:
        """Thaw it, the edge last, and wait until it serves again: the edge's own checks
        of the backends time out at once on thawing (its clock jumped), and a release's
        preflight then met a 503 (the exclusive phase at f5e1cbf)."""
        paused = self._own_containers("paused")
        for c in paused:
            c.unpause()
        if paused:
            wait_ready(self.env())

    def restore_last_good(self) -> None:
        """Put the last released version back, or what `sandbox up` deployed before any
        release (rollback proper is the rollback flow's job)."""
        row = last_release(self.name)
        compose_up(self.env(), {"backend": row["backend"], "frontend": row["frontend"]} if row else self.initial.images)
        wait_ready(self.env())

    def fingerprint(self) -> dict:
        """Schema and data of every table in public: columns, and an md5 over each
        table's rows in a fixed order. Equal fingerprints mean equal databases."""
        with connect(self.env(), "test") as conn:
            out = {"columns": conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, 2").fetchall()}
            for (table,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall():
                out[table] = conn.execute(sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t"
                ).format(sql.Identifier(table))).fetchone()
        return out


# The suite's workers make this a loaded machine: a good backend migrating in its
# entrypoint stayed unhealthy past the default 10 s (load average 10-16 on two
# cores) and its release was rolled back. The grace is the setting for a slow
# machine; the slow-start and broken-backend tests hold as they are under it. A
# release broken on purpose is waited out with it too: at 10 s, the rollback's own
# relaunch of the good version was held to it and failed in CI (stop 40).
UNHEALTHY_GRACE_S = 30


@contextmanager
def app_checkout(source: Path, name: str, adapt: Callable[[Path], None] = lambda app: None):
    """A copy of the app at `source` (without node_modules) in a directory of its own,
    committed as its team would have it (after `adapt` has edited the copy); removed
    afterwards."""
    checkout = Path(tempfile.mkdtemp(prefix=f"smartrelease-{name}-app-"))
    app = checkout / name
    try:
        shutil.copytree(source, app, ignore=shutil.ignore_patterns("node_modules"))
        adapt(app)
        git = ["git", "-C", str(app), "-c", f"user.name={name}", "-c", f"user.email={name}@localhost"]
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", f"{name} 1.0.0"]):
            subprocess.run([*git, *args], check=True, timeout=60)
        yield app
    finally:
        shutil.rmtree(checkout, ignore_errors=True)


@contextmanager
def module_sandbox(project: str, name: str, *, registry: Registry, dev: bool = False,
                   external_db: bool = False, app: Path | None = None):
    """Up a sandbox on free ports with sentinel secrets (kept by `up`, so the leak
    checks know what to look for), pushing to `registry` under repositories of its
    own; import its env file as blocks `name` (and with `dev`, the dev environment's
    as `name`-dev)."""
    # Private (0700), like a checkout under a home directory: as root, an external_db
    # cluster (PostgreSQL runs as `postgres`) then lives under SMARTRELEASE_PG_STATE.
    project = unique(project)
    root = Path(tempfile.mkdtemp(prefix=f"{project}-"))
    settings = manager.Settings(root=root / ".sandbox", env_file=root / f".env.{name}", project=project,
                                pg_port=free_port(), registry_port=int(registry.addr.rsplit(":", 1)[1]),
                                image_prefix=project, edge_port=free_port(), dev_edge_port=free_port())
    settings.env_file.write_text(f"SANDBOX_DB_PASSWORD={DB_PASSWORD}\nJWT_SECRET={JWT_SECRET}\n"
                                 f"BACKUP_PASSPHRASE={BACKUP_PASSPHRASE}\nMETRICS_BASIC_AUTH_PASS={METRICS_PASS}\n")
    try:
        with few_sandboxes_coming_up():
            assert manager.up(settings, dev=dev, external_db=external_db, app=app) == 0
        for env_file in (settings.env_file, settings.dev.env_file) if dev else (settings.env_file,):
            with env_file.open("a") as f:
                f.write(f"RELEASE_UNHEALTHY_GRACE_S={UNHEALTHY_GRACE_S}\n")
        import_environment(settings.env_file, name)
        if dev:
            import_environment(settings.dev.env_file, settings.dev.name)
        yield Sandbox(settings, name)
    finally:
        manager.destroy(settings)
        shutil.rmtree(root, ignore_errors=True)
