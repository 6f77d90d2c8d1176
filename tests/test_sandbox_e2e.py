"""End to end on the sandbox's own commands (`smartrelease sandbox up|status|down|destroy`)
from a private directory: real Docker Engine, Compose v2, registry, PostgreSQL 17 in
the project."""

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import docker
import httpx
import pytest
from prefect.settings import PREFECT_API_URL

from smartrelease.flows.preflight import CHECKS
from smartrelease.sandbox import manager
from smartrelease.sandbox.base_image import DEFAULT_BASE_IMAGE, ensure_base_image
from smartrelease.adapters.images import references
from smartrelease.adapters.running import SERVICE_LABEL, compose_labels, containers, project_containers
from tests.conftest import free_port, few_sandboxes_coming_up, unique

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sandbox_env(shared_registry):
    """A sandbox of the tests' own (directory, ports, compose project), so a
    developer's running sandbox is left alone. Its directory is private (0700, like a
    checkout under a home directory): the db container's PostgreSQL still archives its
    WAL into it (a bind mount does not walk the path)."""
    root = Path(tempfile.mkdtemp(prefix="smartrelease-e2e-"))
    assert root.stat().st_mode & 0o777 == 0o700
    pg_state = Path(tempfile.mkdtemp(prefix="smartrelease-e2e-pgstate-"))
    pg_state.chmod(0o755)
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "SMARTRELEASE_PG_STATE": str(pg_state / "state"),
        "SANDBOX_DIR": str(root / ".sandbox"),
        "SANDBOX_ENV_FILE": str(root / ".env.sandbox"),
        **{f"SANDBOX_{k}_PORT": str(free_port()) for k in ("PG", "EDGE")},
        # The run's registry: `up` uses one that answers, and `down` leaves it running.
        "SANDBOX_REGISTRY_PORT": shared_registry.addr.rsplit(":", 1)[1], "SANDBOX_IMAGE_PREFIX": unique("smartrelease-e2e"),
    }

    def cli(*args, timeout=900):
        return subprocess.run([sys.executable, "-m", "smartrelease.cli", *args], capture_output=True, text=True,
                              env=env, cwd=root, timeout=timeout)

    try:
        with few_sandboxes_coming_up():
            up = cli("sandbox", "up")
        assert up.returncode == 0, up.stderr
        # No SANDBOX_PROJECT: the project is the sandbox's own, named after its id.
        ident = json.loads((root / ".sandbox" / "sandbox.json").read_text())
        env["project"] = f"smartaccounting-sandbox-{ident['id']}"
        yield cli, root, env
    finally:  # an `up` that failed half-way too: its containers kept running the whole run
        cli("sandbox", "destroy")
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pg_state, ignore_errors=True)


def test_sandbox_up_gives_a_passing_preflight(sandbox_env):
    cli, root, env = sandbox_env
    env_file = root / ".env.sandbox"
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert not (root / ".sandbox" / "postgres").exists()  # no cluster on the host: the db service
    out = cli("preflight", "--env-file", str(env_file), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] is True
    assert [(c["name"], c["status"]) for c in report["checks"]] == [(name, "passed") for name in CHECKS]
    database = next(c for c in report["checks"] if c["name"] == "database")["detail"]
    assert "@db:5432/" in database and re.search(r"\(reached at [0-9.]+:5432\)", database)
    assert "PostgreSQL 17." in database
    assert list((root / ".sandbox" / "wal-archive").iterdir())  # shipped through the bind mount

    # The runbook's `curl -I`; and /metrics is internal: the edge does not route it.
    public = f"https://localhost:{env['SANDBOX_EDGE_PORT']}"
    with httpx.Client(verify=ssl.create_default_context(cafile=str(root / ".sandbox" / "tls" / "ca.pem"))) as web:
        head = web.head(f"{public}/api/health")
        assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "application/json"
        assert web.get(f"{public}/metrics").status_code == 404


def test_sandbox_up_is_idempotent_and_status_reports_up(sandbox_env):
    cli, _, env = sandbox_env
    client = docker.from_env()
    before = {c.id for c in client.containers.list(filters={"label": f"com.docker.compose.project={env['project']}"})}
    again = cli("sandbox", "up")
    assert again.returncode == 0, again.stderr
    after = {c.id for c in client.containers.list(filters={"label": f"com.docker.compose.project={env['project']}"})}
    assert before == after and len(after) == 4  # db, backend, frontend, edge: nothing recreated
    status = cli("sandbox", "status")
    assert status.returncode == 0 and status.stdout.split() == [
        "postgres", "up", "registry", "up", "backend", "up", "frontend", "up", "edge", "up"]


def test_up_after_the_state_was_deleted_starts_a_sandbox_of_its_own_and_names_the_old_one(sandbox_env):
    """`rm -rf .sandbox` while it runs, then `up`: a new id, so a new project and a
    new database volume (never the old one, whose password was another's); the old
    edge's port moves; the old containers and volume are named in one line with the
    command that removes them, and left alone until `destroy`."""
    cli, root, env = sandbox_env
    client = docker.from_env()
    old = env["project"]
    old_containers = {c.name for c in project_containers(client, old)}
    old_volumes = {v.name for v in client.volumes.list(filters={"label": f"com.docker.compose.project={old}"})}
    old_networks = {n.name for n in client.networks.list(filters={"label": f"com.docker.compose.project={old}"})}
    assert len(old_containers) == 4 and len(old_volumes) == 1 and old_networks == {f"{old}_default"}
    shutil.rmtree(root / ".sandbox")
    again_env = {k: v for k, v in env.items() if k not in ("SANDBOX_EDGE_PORT", "project")}
    # A checkout made anew has a new git SHA: its 0.9.0 goes to repositories of its own.
    again_env["SANDBOX_IMAGE_PREFIX"] = unique("smartrelease-e2e-again")
    again = subprocess.run([sys.executable, "-m", "smartrelease.cli", "sandbox", "up"], capture_output=True,
                           text=True, env=again_env, cwd=root, timeout=900)
    assert again.returncode == 0, again.stderr
    named = [line for line in again.stderr.splitlines() if old in line]
    assert len(named) == 1, again.stderr
    assert "left behind by another sandbox" in named[0] and "not reused" in named[0]
    assert (f"docker rm -f {' '.join(sorted(old_containers))} && docker network rm {old}_default && "
            f"docker volume rm {' '.join(old_volumes)}") in named[0]
    new = json.loads((root / ".sandbox" / "sandbox.json").read_text())
    assert f"smartaccounting-sandbox-{new['id']}" != old
    assert {c.name for c in project_containers(client, old)} == old_containers  # left alone by up
    env["project"] = f"smartaccounting-sandbox-{new['id']}"
    assert len(project_containers(client, env["project"])) == 4
    env["SANDBOX_IMAGE_PREFIX"] = again_env["SANDBOX_IMAGE_PREFIX"]
    env.pop("SANDBOX_EDGE_PORT")  # the new sandbox's port is the one it recorded

    out = cli("sandbox", "destroy")  # the one command that removes another sandbox's leftovers
    assert out.returncode == 0, out.stderr
    assert project_containers(client, old) == [] and project_containers(client, env["project"]) == []
    assert client.volumes.list(filters={"label": f"com.docker.compose.project={old}"}) == []
    assert client.networks.list(filters={"label": f"com.docker.compose.project={old}"}) == []  # none left to use up Docker's address pools
    up = cli("sandbox", "up")  # the module's later tests want one up
    assert up.returncode == 0, up.stderr
    env["project"] = "smartaccounting-sandbox-" + json.loads((root / ".sandbox" / "sandbox.json").read_text())["id"]


def test_a_database_volume_this_sandbox_did_not_create_is_refused_before_anything_changes(tmp_path, capsys):
    """SANDBOX_PROJECT set to a project whose database volume another sandbox made:
    `up` refuses in one line naming the volume and how to remove it, and writes nothing."""
    project = unique("smartrelease-foreign")
    client = docker.from_env()
    volume = client.volumes.create(f"{project}_db-data", labels={"com.docker.compose.project": project,
                                                                 "com.docker.compose.volume": "db-data"})
    try:
        s = manager.Settings(root=tmp_path / ".sandbox", env_file=tmp_path / ".env.sandbox", project=project,
                             pg_port=free_port(), registry_port=free_port(), edge_port=free_port())
        assert manager.up(s) == 2
        assert client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"}) == []
    finally:
        volume.remove(force=True)
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1] == (f"smartrelease: sandbox: volume {project}_db-data holds a database this sandbox did not create "
                        f"(Compose project {project}, another sandbox's or one whose state was deleted), so its password "
                        f"is not the one in .env.sandbox: remove it with `docker volume rm {project}_db-data` if it is a "
                        "leftover, or set another SANDBOX_PROJECT")
    assert not (tmp_path / ".sandbox").exists() and not (tmp_path / ".env.sandbox").exists()  # nothing written


def test_every_container_of_the_sandbox_ends_on_its_stop_signal(sandbox_env):
    """None is killed once Docker's stop timeout runs out (exit code 137): the edge's
    HAProxy ignored SIGTERM, and every `down` waited 10 s for it."""
    _, _, env = sandbox_env
    found = containers(docker.from_env(), *compose_labels(env["project"]), running_only=True)
    assert {c.labels[SERVICE_LABEL] for c in found} >= {"edge", "backend", "frontend", "db"}
    for c in found:
        c.stop(timeout=60)
        c.reload()
        assert c.attrs["State"]["ExitCode"] != 137, f"{c.name} ignored {c.attrs['Config'].get('StopSignal') or 'SIGTERM'}"


def test_sandbox_down_removes_what_up_started(sandbox_env):
    cli, _, env = sandbox_env
    assert cli("sandbox", "down").returncode == 0
    client = docker.from_env()
    assert client.containers.list(all=True, filters={"label": f"com.docker.compose.project={env['project']}"}) == []
    status = cli("sandbox", "status")
    assert status.returncode == 1 and "postgres  down" in status.stdout and "backend   down" in status.stdout
    assert "registry  up" in status.stdout  # not started by this sandbox: left alone


def test_destroy_deletes_the_state_wherever_it_lives(sandbox_env):
    cli, root, env = sandbox_env
    client, repositories = docker.from_env(), f"127.0.0.1:{env['SANDBOX_REGISTRY_PORT']}/{env['SANDBOX_IMAGE_PREFIX']}/"

    def its_images() -> list[str]:
        return references(client.api.images(), repositories)  # no inspect: other sandboxes delete theirs

    # What a release leaves: a built and pushed image under the sandbox's repositories
    # (the module's earlier `destroy`, of the sandbox that came up after its state was
    # deleted, shared this prefix and took those of `up` that no container used).
    client.images.get(DEFAULT_BASE_IMAGE).tag(f"{repositories}backend", "9.9.9")
    assert its_images()
    out = cli("sandbox", "destroy")
    assert out.returncode == 0, out.stderr
    assert its_images() == []  # a run of `make test` used to leave about 300 image tags behind
    assert not (root / ".sandbox").exists() and not (root / ".env.sandbox").exists()
    moved = Path(env["SMARTRELEASE_PG_STATE"])  # used as root only
    assert not moved.exists() or list(moved.iterdir()) == []


def test_down_removes_the_containers_of_an_environment_whose_state_was_deleted(tmp_path):
    """A dev env file outliving its `.sandbox/` (deleted by hand, or by a fresh demo)
    must not stop `down`: its containers are removed by their project label."""
    s = manager.Settings(root=tmp_path / ".sandbox", env_file=tmp_path / ".env.gone", project=unique("smartrelease-gone-test"),
                         pg_port=free_port(), registry_port=free_port())
    client = docker.from_env()
    ensure_base_image(client, lambda _: None)
    label = {"com.docker.compose.project": s.dev.project}
    network = client.networks.create(f"{s.dev.project}_default", labels=label)
    orphan = client.containers.run(DEFAULT_BASE_IMAGE, ["sleep", "300"], detach=True, labels=label,
                                   network=network.name)
    s.dev.env_file.write_text(f"RELEASE_COMPOSE_FILE={tmp_path}/gone/docker-compose.prod.yml\n"
                              f"RELEASE_COMPOSE_ENV_FILE={tmp_path}/gone/compose-dev.env\n"
                              f"RELEASE_COMPOSE_PROJECT={s.dev.project}\n")
    try:
        assert manager.down(s) == 0
        assert project_containers(client, s.dev.project) == []
        assert client.networks.list(filters={"label": f"com.docker.compose.project={s.dev.project}"}) == []
    finally:
        try:
            orphan.remove(force=True)
            network.remove()
        except docker.errors.NotFound:
            pass
