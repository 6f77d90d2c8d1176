"""A service that cannot run twice, on the shared sandbox under an environment name
of its own (`e2e-stopfirst`): the frontend publishes a host port, as a team without an
edge in front of it has it. A release stops it first and says so in its plan and
report, with the time users got errors on it, while the backend is cut over; with
RELEASE_ZERO_DOWNTIME=required the release is refused before anything changes."""

from pathlib import Path

import httpx
import pytest

from smartrelease.blocks import load_environment
from smartrelease.record.lock import import_environment
from smartrelease.flows.release import release
from smartrelease.sandbox.app_changes import commit_version
from smartrelease.report import Status
from tests.conftest import by_name, free_port
from tests.release_sandbox import run_swept

pytestmark = pytest.mark.e2e
NAME = "e2e-stopfirst"


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def sandbox(shared_sandbox, tmp_path_factory, port):
    """The shared sandbox, its env file copied for NAME with a compose file whose
    frontend publishes a host port."""
    directory = tmp_path_factory.mktemp("stopfirst")
    compose = directory / "docker-compose.prod.yml"
    original = Path(load_environment(shared_sandbox.name).target.compose_file).read_text()
    anchor = "  frontend:\n"
    assert anchor in original, "the sandbox's compose file changed shape: update this test"
    compose.write_text(original.replace(anchor, f"{anchor}    ports: ['127.0.0.1:{port}:8081']\n", 1))
    with shared_sandbox.beside(NAME, directory, RELEASE_COMPOSE_FILE=str(compose)) as env_file:
        shared_sandbox.stop_first_env_file = env_file
        yield shared_sandbox


def test_zero_downtime_required_refuses_the_host_port_before_anything_changes(sandbox, port):
    with sandbox.stop_first_env_file.open("a") as f:
        f.write("RELEASE_ZERO_DOWNTIME=required\n")
    import_environment(sandbox.stop_first_env_file, NAME)
    try:
        before = sandbox.containers()
        commit_version(sandbox.app_dir, "9.1.0")
        state, report = run_swept(release, environment=NAME)
        assert state.is_failed()
        steps = by_name(report)
        assert steps["preflight"].status == Status.FAILED
        assert (f"frontend publishes host port(s) {port}: it cannot run twice at once, so a release would stop it "
                "first and users would get errors (RELEASE_ZERO_DOWNTIME=required)") in steps["preflight"].detail
        assert steps["build-pin"].status == Status.SKIPPED and sandbox.containers() == before
    finally:
        text = sandbox.stop_first_env_file.read_text().replace("RELEASE_ZERO_DOWNTIME=required\n", "")
        sandbox.stop_first_env_file.write_text(text)
        import_environment(sandbox.stop_first_env_file, NAME)


def test_a_frontend_on_a_host_port_is_stopped_first_named_in_the_plan_and_timed_in_the_report(sandbox, port):
    commit_version(sandbox.app_dir, "9.2.0")
    state, report = run_swept(release, environment=NAME)
    assert state.is_completed(), report.text()
    steps = by_name(report)
    # (the stand-in's frontend is checked every 2 s: its stop, then the first check)
    assert "frontend stopped first: users get errors on it for about 3 s during the launch" in steps["rollback-plan"].detail
    launch = steps["launch"]
    assert launch.status == Status.WARNING, launch.detail
    assert "backend (1 old -> 1 new)" in launch.detail  # cut over beside the old one
    assert f"frontend stopped first (publishes host port(s) {port}): down " in launch.detail
    assert "users got errors on it meanwhile" in launch.detail
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200  # the new one holds the port
    assert steps["verify"].status == Status.PASSED
