"""Releases and rollbacks under load, on the shared sandbox: requests at a fixed rate
through the TLS edge (HAProxy, finding healthy containers through the Docker socket) to an
endpoint that reads the database, for the whole run. The cutover must drop none;
the old stop-then-start path must drop some, or this test could not tell them apart.

Nothing here rests on the stand-in's internals: the broken version crashes on start
(any app can), and the drain goes through the compose file's health check. Last, Docker
Engine restarts during a cutover (tests/faults.py causes it)."""

import time

import docker
import pytest

from smartrelease.flows.rollback import rollback
from smartrelease.sandbox.app_changes import commit_version, migration
from smartrelease.sandbox.load import Load
from smartrelease.report import Report, Status
from smartrelease.tasks.cutover import KEPT_SERVING
from smartrelease.process import run
from smartrelease.tasks.launch import project_compose
from smartrelease.adapters.running import Container, service_containers
from smartrelease.record.history import last_release
from smartrelease.flows.verify import verify
from tests.conftest import SHARED_ENV, by_name
from tests.faults import Unchanged, release_with_fault, restart_docker_engine

# exclusive: it counts the requests dropped under load, and the other workers' load
# made the machine drop them (p50 31 s at a load average of 15), not the cutover; and
# its last test restarts Docker Engine, which stops every container on the machine.
pytestmark = [pytest.mark.e2e, pytest.mark.exclusive]
ENV = SHARED_ENV
RATE = 50  # requests/s: bounded, and enough to land in every gap of a stop-then-start
PATH = "/api/accounts"  # reads the database


@pytest.fixture(scope="module")
def sandbox(shared_sandbox):
    """The shared sandbox on a release a rollback can go back to (`sandbox.base`): the
    one it runs, which every module leaves verified, or 6.0.0 on a new sandbox. (This
    module runs alone at the end of `make test`: a release here is the run's own time.)"""
    if last_release(ENV) is None:
        state, report, _ = shared_sandbox.release("6.0.0")
        assert state.is_completed(), report.text()
    shared_sandbox.base = last_release(ENV)["version"]
    assert shared_sandbox.env_running_version() == shared_sandbox.base
    yield shared_sandbox


def load(sandbox) -> Load:
    env = sandbox.env()
    return Load(env.target.public_url + PATH, rate=RATE, ca=env.target.ca_bundle, max_s=300)


def app_containers(sandbox) -> dict[str, list[tuple[str, str]]]:
    """service -> [(container id, image reference)] of every container of the app's services."""
    env, client = sandbox.env(), docker.from_env()
    return {s: sorted((c.id, c.reference) for c in service_containers(client, env.target.compose_project, s))
            for s in (env.target.backend_service, env.target.frontend_service)}



def test_a_good_release_under_load_drops_no_request_and_leaves_only_the_new_containers(sandbox):
    before = app_containers(sandbox)
    with load(sandbox) as traffic:
        state, report, _ = sandbox.release("6.1.0")
    assert state.is_completed(), report.text()
    stats = traffic.stats()
    assert stats.requests > 5 * RATE and stats.failed == 0, stats.line()
    launch = by_name(report)["launch"]
    assert launch.status == Status.PASSED and launch.detail.startswith("cut over backend (1 old -> 1 new)"), launch.detail
    assert "old drained in" in launch.detail, launch.detail  # taken out of the edge by its health check first
    after = app_containers(sandbox)
    for service, containers in after.items():
        assert len(containers) == 1 and containers[0][0] not in {cid for cid, _ in before[service]}, after
        assert containers[0][1].rsplit("@", 1)[1] in report.facts.digests.values(), (containers, report.facts.digests)


def test_a_broken_release_under_load_drops_no_request_and_leaves_exactly_the_old_containers(sandbox):
    before = app_containers(sandbox)
    with load(sandbox) as traffic:
        state, report, _ = sandbox.release("6.2.0", faults=["crash-on-start"])
    assert state.is_failed()
    stats = traffic.stats()
    assert stats.requests > 5 * RATE and stats.failed == 0, stats.line()
    launch = by_name(report)["launch"]
    assert launch.status == Status.FAILED and KEPT_SERVING in launch.detail, launch.detail
    assert "crash-on-start" in launch.detail  # the new container's own last words
    assert report.facts.rollback.recovered, report.text()
    assert app_containers(sandbox) == before  # the very containers that served before: never stopped


def rollback_under_load(sandbox, to_version: str) -> Report:
    """A rollback that completes and drops no request under load; its report."""
    with load(sandbox) as traffic:
        state = rollback(environment=ENV, to_version=to_version, return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), report.text()
    stats = traffic.stats()
    assert stats.requests > 3 * RATE and stats.failed == 0, stats.line()
    assert by_name(report)["relaunch"].detail.startswith("cut over backend (1 old -> 1 new)")
    return report


def test_a_rollback_under_load_drops_no_request(sandbox):
    rollback_under_load(sandbox, sandbox.base)


def test_the_old_stop_then_start_path_drops_requests_and_the_report_says_so(sandbox):
    with load(sandbox) as traffic:
        state, report, _ = sandbox.release("6.3.0", stop_first=True)
    assert state.is_completed(), report.text()
    stats = traffic.stats()
    assert stats.failed > 0, stats.line()  # what the cutover is for: this path is visible to users
    launch = by_name(report)["launch"]
    assert launch.status == Status.WARNING and "users get errors until wait-ready passes" in launch.detail
    assert all(len(c) == 1 for c in app_containers(sandbox).values())


def edge_log(client, env, since: int) -> str:
    [edge] = service_containers(client, env.target.compose_project, "edge")
    return client.containers.get(edge.id).logs(since=since).decode(errors="replace")


def test_the_edge_sends_nothing_to_a_container_docker_does_not_call_healthy(sandbox):
    """A container still starting, or failing its health check, gets no request (a
    starting backend may not listen yet); once Docker calls it healthy, it does."""
    env, client = sandbox.env(), docker.from_env()
    t = env.target
    [serving] = service_containers(client, t.compose_project, t.backend_service)
    [web] = service_containers(client, t.compose_project, t.frontend_service)
    project = project_compose(env, {"backend": serving.reference, "frontend": web.reference})
    since = int(time.time())
    with load(sandbox) as traffic:
        run(project.up([t.backend_service], no_deps=True, no_recreate=True, scale={t.backend_service: 2}))
        [extra] = [c for c in service_containers(client, t.compose_project, t.backend_service) if c.id != serving.id]
        try:
            container = client.containers.get(extra.id)
            container.exec_run(["touch", t.drain_file])  # it answers /ready, but Docker will not call it healthy
            ip = next(iter(container.attrs["NetworkSettings"]["Networks"].values()))["IPAddress"]
            # An absence, so a fixed window: three of its 2 s health checks, and twelve
            # rounds of the edge's discovery, in which it would have been routed to.
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline:
                assert f"addr {ip} " not in edge_log(client, env, since), "routed to a container not healthy"
                time.sleep(0.5)
            assert Container.of(client.containers.get(extra.id)).health in ("starting", "unhealthy")
            container.exec_run(["rm", t.drain_file])
            deadline = time.monotonic() + 10
            while f"addr {ip} " not in edge_log(client, env, since) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert f"addr {ip} " in edge_log(client, env, since), "not routed to once healthy"
            container.exec_run(["touch", t.drain_file])  # drained, as the cutover does, before it goes
            deadline = time.monotonic() + 10
            while Container.of(client.containers.get(extra.id)).health != "unhealthy" and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(t.edge_settle_s)
        finally:
            client.containers.get(extra.id).remove(force=True)
    stats = traffic.stats()
    assert stats.failed == 0, stats.line()


def test_a_rollback_that_undoes_a_migration_cuts_the_code_over_first_and_drops_no_request(sandbox):
    """Expand/contract: the previous version runs on the newer schema, so it goes back
    first while users are served, and the migration is undone while it serves."""
    name = "20261202000000-add-account-memo.js"
    before = sandbox.schema()
    state, report, _ = sandbox.release("6.4.0", files={f"migrations/{name}": migration(
        "ALTER TABLE accounts ADD COLUMN memo TEXT", "ALTER TABLE accounts DROP COLUMN memo")})
    assert state.is_completed(), report.text()
    assert sandbox.schema() != before
    try:
        report = rollback_under_load(sandbox, "6.3.0")
        done = [r.name for r in report.results]
        assert done[done.index("relaunch"):] == ["relaunch", "wait-ready", "safety-backup", "undo-migrations",
                                                 "verify"], done
        assert "stop-backend" not in done
        assert report.facts.rollback.migrations_undone == [name]
        assert sandbox.schema() == before  # the column and its SequelizeMeta row are gone
    finally:
        commit_version(sandbox.app_dir, "0.0.0", {f"migrations/{name}": None})


# Last in this module: it stops every container on the machine.
def test_docker_engine_restarting_during_the_cutover_ends_on_one_verified_version(shared_sandbox):
    """dockerd is restarted the moment the new backend container exists, while the
    release waits for it to be healthy. The release must end (Failed, recovered, or
    released), never hang; when it could not recover, `rollback` does. After that one
    version runs, verified, with the database as it was and one container per service."""
    from smartrelease.flows.rollback import rollback

    sandbox = shared_sandbox
    if last_release(ENV) is None:  # this module first on a new sandbox: a release for a rollback to go back to
        state, first, _ = sandbox.release("8.0.0")
        assert state.is_completed(), first.text()
    before = Unchanged(sandbox)

    def new_container_started() -> bool:
        return bool(docker.from_env().containers.list(all=True, filters={"label": [
            f"com.docker.compose.project={sandbox.settings.project}", "org.opencontainers.image.version=8.6.0"]}))

    state, report, away = release_with_fault(sandbox, "8.6.0", new_container_started, restart_docker_engine)
    assert away is not None, "the new container never started: the fault was not caused"
    assert state.is_final()
    recovered = report.ok or (report.facts.rollback is not None and report.facts.rollback.recovered)
    followed = None
    print(report.text())
    if not recovered:
        followed = rollback(environment=ENV, return_state=True)
        assert followed.is_completed(), followed.result(raise_on_failure=False).text()
    running = sandbox.env_running_version()
    assert running == ("8.6.0" if report.ok else before.version), report.text()
    assert verify(environment=ENV, expect_version=running, return_state=True).is_completed()
    assert sandbox.fingerprint() == before.database
    containers = docker.from_env().containers.list(
        all=True, filters={"label": f"com.docker.compose.project={sandbox.settings.project}"})
    services = [c.labels.get("com.docker.compose.service") for c in containers]
    assert sorted(services) == sorted(set(services)) and all(c.status == "running" for c in containers), \
        [(c.name, c.status) for c in containers]
    print(f"Docker Engine away {away:.1f} s during the cutover: "
          + ("released" if report.ok else "recovered by the release" if recovered else "recovered by rollback") + "; "
          + "; ".join(f"{r.name} {r.status.value}: {r.detail[:100]}" for r in report.results if r.status.value != "skipped"))
