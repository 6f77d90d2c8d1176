"""Taking over an environment released by hand, on the shared sandbox under an
environment name of its own (`e2e-adopt`: its own history, the same Compose project).

The runbook's way: a compose file of the runbook's shape (`build:` without `image:`,
a `container_name` on each app service), started with `docker compose up -d --build`
on this host (no OCI labels, nothing pushed). The tool refuses to release it
before building anything, adopts it, releases over it, rolls back to it (automatically
and by hand), releases again; then the same environment rebuilt from scratch (nothing
running, an empty database, a history) takes a first release."""

from pathlib import Path

import docker
import pytest
from psycopg import sql

from smartrelease.blocks import load_environment
from smartrelease.flows.adopt import adopt
from smartrelease.record.history import read_history
from smartrelease.flows.release import release
from smartrelease.flows.rollback import rollback
from smartrelease.sandbox.app_changes import commit_version
from smartrelease.report import Report, Status
from smartrelease.tasks.build_pin import registry_for
from smartrelease.adapters.postgres import connect
from tests.conftest import by_name
from tests.release_sandbox import release_by_hand, run_swept

pytestmark = pytest.mark.e2e
NAME = "e2e-adopt"
HAND = "7.0.0"  # released by hand


def runbook_compose(sandbox, directory: Path) -> Path:
    """The sandbox's compose file as the runbook's team writes it: the app's services
    built from the checkout, each with a fixed container name, no image variable."""
    env = sandbox.env()
    text = Path(env.target.compose_file).read_text()
    for role, context in (("backend", env.target.backend_context), ("frontend", env.target.frontend_context)):
        variable = env.target.image_variable(role)
        line = f"    image: ${{{variable}:?{variable} is required}}\n"
        assert line in text, "the sandbox's compose file changed shape: update this test"
        text = text.replace(line, f"    build:\n      context: {sandbox.app_dir / context}\n"
                                  "      args: [APP_VERSION, GIT_SHA, BUILD_TIME]\n"
                                  f"    container_name: {sandbox.settings.project}-{role}-by-hand\n")
    path = directory / "docker-compose.prod.yml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def sandbox(shared_sandbox, tmp_path_factory):
    """The shared sandbox, its env file copied for NAME with the runbook's compose file."""
    directory = tmp_path_factory.mktemp("runbook")
    compose = runbook_compose(shared_sandbox, directory)
    with shared_sandbox.beside(NAME, directory, RELEASE_COMPOSE_FILE=str(compose)) as env_file:
        shared_sandbox.adopt_env_file = env_file
        yield shared_sandbox


def registry_tag(sandbox, role: str, tag: str) -> str | None:
    env = sandbox.env()
    with registry_for(env) as registry:
        return registry.digest(getattr(env.target, f"{role}_image"), tag)


def release_as(sandbox, version: str, faults: list[str] | None = None) -> tuple[object, Report]:
    """Commit `version` to the checkout and release it to NAME."""
    commit_version(sandbox.app_dir, version, faults=faults)
    return run_swept(release, environment=NAME)


def test_a_hand_released_environment_is_adopted_released_rolled_back_to_and_released_again(sandbox):
    tags = release_by_hand(NAME, sandbox.app_dir, HAND)
    hand_images = sandbox.app_images()
    client = docker.from_env()
    assert hand_images == {role: client.images.get(tag).id for role, tag in tags.items()}
    names = {s.labels["com.docker.compose.service"]: s.name
             for s in client.containers.list(filters={"label": f"com.docker.compose.project={sandbox.settings.project}"})}
    assert names["backend"] == f"{sandbox.settings.project}-backend-by-hand"  # the team's container_name

    # Refused before anything is built or pushed, naming the way forward.
    state, report = release_as(sandbox, "7.1.0")
    assert state.is_failed()
    steps = by_name(report)
    assert steps["preflight"].status == Status.FAILED
    assert "running: backend runs " + tags["backend"] in steps["preflight"].detail
    assert f"Run `smartrelease adopt --env-file {sandbox.adopt_env_file}` to take it over" in steps["preflight"].detail
    assert steps["build-pin"].status == Status.SKIPPED
    assert registry_tag(sandbox, "backend", "7.1.0") is None  # nothing built or pushed
    assert sandbox.app_images() == hand_images

    # Adopted: the running images pushed as they are, recorded in the history.
    state, report = run_swept(adopt, environment=NAME)
    assert state.is_completed(), report.text()
    assert f"{HAND} (released by hand) taken over: pushed as adopted-{HAND}" in by_name(report)["adopt"].detail
    [_, row] = read_history(NAME)
    assert row["result"] == "adopted" and row["version"] == HAND
    for role in ("backend", "frontend"):
        digest = registry_tag(sandbox, role, f"adopted-{HAND}")
        assert row[role].endswith("@" + digest)
        assert row[role] in client.images.get(hand_images[role]).attrs["RepoDigests"]  # the very image, not a rebuild
    assert sandbox.app_images() == hand_images  # nothing relaunched
    state, report = run_swept(adopt, environment=NAME)  # twice: nothing more to take over
    assert state.is_failed() and f"{HAND} runs by digest (adopted before): nothing to take over" in report.text()

    # A release that fails verify rolls itself back to the hand-released version, verified.
    state, report = release_as(sandbox, "7.2.0", faults=["report-sha " + "0" * 40])
    assert state.is_failed()
    steps = by_name(report)
    assert steps["preflight"].status == Status.PASSED, steps["preflight"].detail
    assert steps["rollback-plan"].detail.startswith(f"back to {HAND} by digest")
    assert steps["verify"].status == Status.FAILED
    assert steps["rollback: verify"].status == Status.PASSED, steps["rollback: verify"].detail
    assert "adopted: built by hand without the OCI labels" in steps["rollback: verify"].detail
    assert report.facts.previous_version == HAND
    assert report.facts.rollback.recovered and report.facts.rollback.to_version == HAND
    assert sandbox.app_images() == hand_images

    # Released over it, rolled back to it, released again: every row kept.
    state, report = release_as(sandbox, "7.3.0")
    assert state.is_completed(), report.text()
    assert report.facts.previous_version == HAND
    state, report = run_swept(rollback, environment=NAME)
    assert state.is_completed(), report.text()
    assert report.facts.version == HAND and sandbox.app_images() == hand_images
    assert "adopted: built by hand" in by_name(report)["verify"].detail
    state, report = run_swept(release, environment=NAME)
    assert state.is_completed(), report.text()
    assert Path(load_environment(NAME).target.compose_file).read_text() == runbook_compose(
        sandbox, Path(load_environment(NAME).target.compose_file).parent).read_text()  # never edited
    assert "-by-hand" not in " ".join(c.name for c in client.containers.list(
        filters={"label": f"com.docker.compose.project={sandbox.settings.project}"}))  # two ran side by side
    assert [(r["version"], r["result"]) for r in read_history(NAME)] == [
        ("7.1.0", "failed at preflight"), (HAND, "adopted"), ("(none decided)", "failed at adopt"),
        ("7.2.0", f"failed at verify; rolled back to {HAND}"), ("7.3.0", "released"), (HAND, "rolled back"),
        ("7.3.0", "released")]


def test_an_environment_rebuilt_from_scratch_takes_a_first_release_naming_its_last_one(sandbox):
    """Its containers gone and its database empty (a new host, a disaster recovery),
    but its history has rows: released as a first release, with a warning."""
    assert read_history(NAME), "runs after the adoption test, on its history"
    env, client = sandbox.env(), docker.from_env()
    for service, (container, _) in sandbox.containers().items():
        if service != "db":
            client.containers.get(container).remove(force=True)
    with connect(env, "test") as conn:
        conn.execute(sql.SQL("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    state, report = release_as(sandbox, "7.4.0")
    assert state.is_completed(), report.text()
    steps = by_name(report)
    assert steps["preflight"].status == Status.WARNING
    assert ("running: nothing of the app runs in Compose project " f"{env.target.compose_project}, but the history's "
            "last release is 7.3.0") in steps["preflight"].detail
    assert list(steps).index("tls") == list(steps).index("wait-ready") + 1  # checked once something serves
    assert "first release: nothing to go back to" in steps["rollback-plan"].detail
    assert report.facts.rollback is None
