"""The release and verify flows end to end on the shared sandbox: real Docker Engine,
registry, Compose v2, PostgreSQL 17 as the project's db service, the Node.js backend
with sequelize-cli migrations, and a Prefect server. Faults are baked into the images
shipped (see sandbox/app/standin-faults), not mocked."""

import re

import docker
import pytest

from smartrelease.record.history import read_history
from smartrelease.flows.release import STEPS, release
from smartrelease.flows.verify import verify
from smartrelease.sandbox.app_changes import commit_version, migration
from smartrelease.errors import StepFailed
from smartrelease.report import Report, Status
from smartrelease.tasks.build_pin import push_immutable, registry_for
from smartrelease.adapters.images import build_image
from smartrelease.adapters.running import running_services
from smartrelease.sandbox.base_image import DEFAULT_BASE_IMAGE
from tests.conftest import SENTINELS, SHARED_ENV, assert_no_secret, by_name, stored

pytestmark = pytest.mark.e2e
ENV = SHARED_ENV


@pytest.fixture(scope="module")
def sandbox(shared_sandbox):
    yield shared_sandbox


def assert_no_secrets(state, report: Report) -> None:
    texts = stored(state.state_details.flow_run_id)
    texts["report"] = report.model_dump_json() + report.markdown() + report.text()
    # The logs and events really are stored (preflight's checks' too), so the sweep means something.
    assert "preflight" in texts["logs"] and "environment passed" in texts["logs"]
    assert any(e.startswith("prefect.flow-run.") for e in texts["event_names"])
    assert_no_secret(texts, SENTINELS)


def test_a_release_passes_and_a_second_one_upgrades_with_a_migration(sandbox):
    running_before = sandbox.env_running_version()
    db = sandbox.db_container()
    state, first, sha = sandbox.release("1.0.0")
    assert state.is_completed(), first.text()
    assert [r.name for r in first.results] == list(STEPS)
    assert all(r.status == Status.PASSED for r in first.results), first.text()
    assert first.facts.previous_version == running_before and first.facts.git_sha == sha
    assert first.facts.migrations_applied == []
    # The database runs PostgreSQL 17 in the project, newer than this host's client
    # (15): the backup was taken with the db service's own pg_dump.
    assert re.search(r"@db:5432/smartaccounting \(reached at [0-9.]+:5432\)", stored(state.state_details.flow_run_id)["logs"])
    assert ", PostgreSQL 17." in stored(state.state_details.flow_run_id)["logs"]
    # Metrics are internal: read at the backend's own address; the edge does not route them.
    assert by_name(first)["metrics"].detail.startswith("http://backend:8080/metrics: ")
    assert_no_secrets(state, first)

    name = "20261101000000-add-account-currency.js"
    # ... and, as happens, an applied migration edited after the fact (a comment here)
    applied = "migrations/20260101000000-create-accounts.js"
    edited = (sandbox.app_dir / applied).read_text() + "// reformatted\n"
    state, second, _ = sandbox.release("1.1.0", files={f"migrations/{name}": migration(
        "ALTER TABLE accounts ADD COLUMN currency CHAR(3) NOT NULL DEFAULT 'EUR'",
        "ALTER TABLE accounts DROP COLUMN currency"), applied: edited})
    assert state.is_completed(), second.text()
    guard = by_name(second)["migration-guard"]
    assert guard.status == Status.WARNING and guard.detail == (
        f"1 pending: {name}; 20260101000000-create-accounts.js already applied and changed since the running version: "
        "Sequelize does not run an applied migration again, so the change never reaches the database; put it in a new "
        "migration"), guard.detail
    assert second.facts.previous_version == "1.0.0"
    assert second.facts.migrations_applied == [name]
    columns, meta = sandbox.schema()
    assert ("accounts", "currency", "character") in columns and (name,) in meta
    assert sandbox.db_container() == db  # no release recreates the database

    # What runs is exactly what was pinned, and the history says so.
    running = running_services(docker.from_env(), sandbox.env())
    for repository, digest in second.facts.digests.items():
        service = repository.rsplit("/", 1)[1]
        assert running[service].digest_in(repository) == digest
    rows = read_history(ENV)
    assert [(r["version"], r["result"]) for r in rows[-2:]] == [("1.0.0", "released"), ("1.1.0", "released")]
    assert rows[-1]["migrations"] == name and rows[-1]["previous"] == "1.0.0"
    assert {"release-e2e", "release-history-e2e"} <= set(stored(state.state_details.flow_run_id)["artifact_keys"])

    # The verify flow (what the schedule runs) agrees, and notices a version mismatch.
    ok = verify(environment=ENV, return_state=True)
    assert_no_secret(stored(ok.state_details.flow_run_id), SENTINELS, "of a passing verify")
    assert ok.is_completed(), ok.result(raise_on_failure=False).text()
    wrong = verify(environment=ENV, expect_version="1.0.0", return_state=True).result(raise_on_failure=False)
    assert not wrong.ok and "version is '1.1.0', expected '1.0.0'" in by_name(wrong)["verify"].detail


def test_pending_migrations_without_allow_prod_migrations_change_nothing(sandbox):
    sandbox.set_env("ALLOW_PROD_MIGRATIONS", "false")
    before = sandbox.containers(), sandbox.schema()
    name = "20261102000000-add-account-note.js"
    try:
        state, report, _ = sandbox.release("1.2.0", files={f"migrations/{name}": migration(
            "ALTER TABLE accounts ADD COLUMN note TEXT", "ALTER TABLE accounts DROP COLUMN note")})
    finally:
        sandbox.set_env("ALLOW_PROD_MIGRATIONS", "true")
        commit_version(sandbox.app_dir, "1.2.0", {f"migrations/{name}": None})  # never applied: not for later releases
    assert state.is_failed()
    guard = by_name(report)["migration-guard"]
    assert guard.status == Status.FAILED
    assert "20261102000000-add-account-note.js" in guard.detail and "ALLOW_PROD_MIGRATIONS is not 'true'" in guard.detail
    assert all(by_name(report)[s].status == Status.SKIPPED for s in ("launch", "wait-ready", "verify"))
    assert (sandbox.containers(), sandbox.schema()) == before  # same containers, same images, same schema


def test_a_version_endpoint_reporting_a_wrong_git_sha_fails_verify(sandbox):
    state, report, sha = sandbox.release("1.3.0", faults=["report-sha 0000000000000000000000000000000000000000"])
    assert state.is_failed()
    failed = report.failures()
    assert [r.name for r in failed] == ["verify"]
    assert f"gitSha is '0000000000000000000000000000000000000000', expected '{sha}'" in failed[0].detail


def test_an_open_metrics_endpoint_fails_the_metrics_step(sandbox):
    state, report, _ = sandbox.release("1.4.0", faults=["open-metrics"])
    assert state.is_failed()
    assert [r.name for r in report.failures()] == ["metrics"]
    assert "SECURITY" in by_name(report)["metrics"].detail and "without credentials" in by_name(report)["metrics"].detail


def test_an_endpoint_failing_its_first_two_calls_passes_on_retry(sandbox):
    state, report, _ = sandbox.release("1.5.0", faults=["flaky /api/auth/health 2"])
    assert state.is_completed(), report.text()
    counts = stored(state.state_details.flow_run_id)["task_run_counts"]
    assert counts["smoke /api/auth/health"] == 3 and counts["smoke /health"] == 1
    # Retries happen inside the step: a step that passes on retry never starts a rollback.
    assert report.facts.rollback is None and not any(r.name.startswith("rollback: ") for r in report.results)


def test_a_container_crashing_on_start_fails_the_launch_with_its_logs_while_the_old_one_serves(sandbox):
    serving = sandbox.containers()
    try:
        state, report, _ = sandbox.release("1.6.0", faults=["crash-on-start"])
        assert state.is_failed()
        step = by_name(report)["launch"]
        assert step.status == Status.FAILED
        # Reported as the crash it is, not as a timeout after ready_timeout_s.
        assert step.detail.startswith("backend container") and "not healthy after" not in step.detail
        assert "the old version kept serving; nothing to roll back for code" in step.detail
        assert sandbox.containers() == serving  # exactly the old containers, never stopped
        assert "fatal: cannot start (crash-on-start fault)" in step.detail
        assert "fatal: cannot start" in report.markdown()
        assert_no_secrets(state, report)
    finally:
        sandbox.restore_last_good()


def test_a_backend_unhealthy_for_a_moment_while_it_starts_is_released_not_rolled_back(sandbox):
    # Its health check (every 2 s, unhealthy at the first failure) fails until it listens
    # 6 s after starting, as a good backend busy with its migrations on a loaded machine
    # does: Docker marks it unhealthy at about 2 s and healthy at about 8 s, within the
    # grace (30 s in the tests, 10 s by default).
    state, report, _ = sandbox.release("1.6.5", faults=["slow-start 6"])
    assert state.is_completed(), report.text()
    step = by_name(report)["launch"]
    assert step.status == Status.PASSED and "(backend unhealthy on the way)" in step.detail, step.detail
    assert report.facts.rollback is None


def test_an_existing_tag_is_never_overwritten_with_other_content(sandbox, tmp_path):
    env = sandbox.env()
    repository = f"{env.target.registry}/{env.target.backend_image}"
    with registry_for(env) as registry:
        before = registry.digest(env.target.backend_image, "1.0.0")
        assert before
        (tmp_path / "Dockerfile").write_text(f"FROM {DEFAULT_BASE_IMAGE}\nLABEL impostor=yes\n")
        build_image(docker.from_env(), tmp_path, f"{repository}:1.0.0")
        with pytest.raises(StepFailed) as refused:
            push_immutable(docker.from_env(), registry, repository, env.target.backend_image, "1.0.0")
        assert f"already points to {before}" in refused.value.reason and "immutable" in refused.value.reason
        assert registry.digest(env.target.backend_image, "1.0.0") == before


def test_a_release_on_a_host_that_never_built_the_images(sandbox):
    """CI built and pushed 1.7.0; the release host has no copy of its images (every
    local one removed): build-pin pulls them before migration-guard and launch need them."""
    from smartrelease.tasks.build_pin import build_pin

    commit_version(sandbox.app_dir, "1.7.0", {"client/built-by-ci.txt": "1.7.0\n"})
    pushed = build_pin(sandbox.env(), "1.7.0")
    client = docker.from_env()
    for image in pushed.images.values():
        for local in client.images.list(name=image.repository):
            if any(t.endswith(":1.7.0") for t in local.tags) or image.digest in str(local.attrs.get("RepoDigests")):
                client.images.remove(local.id, force=True)
        with pytest.raises(docker.errors.ImageNotFound):
            client.images.get(image.ref)
    state = release(environment=ENV, return_state=True)
    report = state.result(raise_on_failure=False)
    assert state.is_completed(), report.text()
    assert by_name(report)["build-pin"].detail.count("deployed as pushed, pulled") == 2
    assert {s: r.digest for s, r in pushed.images.items()} == {
        s: ref.split("@")[1] for s, ref in {"backend": read_history(ENV)[-1]["backend"],
                                             "frontend": read_history(ENV)[-1]["frontend"]}.items()}


def test_what_runs_without_version_labels_is_not_taken_for_a_first_release(sandbox):
    """A project deployed by hand from CI's plain builds (`docker build` without the OCI
    labels) is not an empty environment: the release refuses at preflight, before
    anything is built, naming `smartrelease adopt`, instead of treating it as a first
    release with nothing to go back to."""
    from smartrelease.record.lock import import_environment
    from smartrelease.tasks.build_pin import push_immutable
    from smartrelease.tasks.launch import compose_up
    from smartrelease.tasks.readiness import wait_ready

    env, client = sandbox.env(), docker.from_env()
    contexts = {"backend": sandbox.app_dir / env.target.backend_context,
                "frontend": sandbox.app_dir / env.target.frontend_context}
    bare = {}
    with registry_for(env) as registry:
        for role, context in contexts.items():
            path = getattr(env.target, f"{role}_image")
            repository = f"{env.target.registry}/{path}"
            build_image(client, context, f"{repository}:unlabelled")  # no --label, as CI's plain build
            bare[role] = f"{repository}@{push_immutable(client, registry, repository, path, 'unlabelled')}"
    try:
        compose_up(env, bare)
        wait_ready(env)
        import_environment(sandbox.settings.env_file, "e2e-bare")  # the same project, no history
        state, report, _ = sandbox.release("1.8.0", environment="e2e-bare")
        assert state.is_failed()
        step = by_name(report)["preflight"]
        assert step.status == Status.FAILED and ("running: backend's image carries no "
                                                 "org.opencontainers.image.version label") in step.detail
        assert "smartrelease adopt --env-file" in step.detail
        assert by_name(report)["build-pin"].status == Status.SKIPPED
        assert {s: c[1] for s, c in sandbox.containers().items() if s in bare} == {
            s: client.images.get(ref).id for s, ref in bare.items()}  # nothing relaunched
    finally:
        sandbox.restore_last_good()


def test_the_first_release_of_an_empty_environment(sandbox):
    """Nothing of the app runs in the project (the edge neither; only its database,
    provisioned before the first release) and nothing was ever released under this
    name: preflight cannot reach the public URL, so tls is a warning there and the
    full check runs after launch."""
    from smartrelease.record.lock import import_environment

    for service, (container, _) in sandbox.containers().items():
        if service != "db":
            docker.from_env().containers.get(container).remove(force=True)
    assert set(sandbox.containers()) == {"db"}
    import_environment(sandbox.settings.env_file, "e2e-first")
    try:
        state, report, _ = sandbox.release("1.9.0", environment="e2e-first")
        assert state.is_completed(), report.text()
        steps = by_name(report)
        assert list(steps).index("tls") == list(steps).index("wait-ready") + 1
        assert steps["preflight"].status == Status.WARNING
        assert "tls: first release: nothing serves localhost yet" in steps["preflight"].detail
        assert steps["tls"].status == Status.PASSED and "200 OK, trusted chain" in steps["tls"].detail
        assert "first release: nothing to go back to" in steps["rollback-plan"].detail
        assert report.facts.previous_version is None and report.facts.rollback is None
    finally:
        sandbox.restore_last_good()
