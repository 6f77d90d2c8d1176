"""Promotion dev -> prod on a sandbox with both environments side by side (two Compose
projects, two databases, one registry): the digest built for dev is the digest
production runs, checked at every hop. This sandbox keeps its database outside
Compose (a PostgreSQL cluster on this host, reached by the containers through
host.docker.internal and by the tool at RELEASE_DATABASE_ADDRESS): the topology of a
managed database."""

import os

import pytest

from smartrelease.flows.build import build
from smartrelease.record.history import read_history
from smartrelease.flows.promote import promote
from smartrelease.flows.release import release
from smartrelease.sandbox.app_changes import commit_version
from smartrelease.local_postgres import SHARED_STATE
from smartrelease.report import Status
from smartrelease.tasks.build_pin import registry_for
from smartrelease.tasks.rollback_plan import running_deployment
from tests.conftest import stored
from tests.release_sandbox import module_sandbox, run_swept

pytestmark = pytest.mark.e2e
PROD, DEV = "promo", "promo-dev"
SERVICES = ("backend", "frontend")


@pytest.fixture(scope="module")
def sandbox(shared_registry):
    with module_sandbox("smartrelease-promote-e2e", PROD, registry=shared_registry, dev=True, external_db=True) as sb:
        yield sb


def dev_build(sandbox, version: str) -> tuple[str, dict[str, str]]:
    """Commit `version` to the checkout and build it for dev: (dev tag, {service: digest})."""
    sha = commit_version(sandbox.app_dir, version, {"client/promoted.txt": f"{version}\n"})
    state, report = run_swept(build, environment=DEV)
    assert state.is_completed(), report.text()
    digests = {repo.rsplit("/", 1)[1]: digest for repo, digest in report.facts.digests.items()}
    assert report.facts.git_sha == sha and set(digests) == set(SERVICES)
    return f"dev-{sha[:7]}", digests


def tags(sandbox, version: str) -> dict[str, str | None]:
    env = sandbox.env()
    with registry_for(env) as registry:
        return {s: registry.digest(getattr(env.target, f"{s}_image"), version) for s in SERVICES}


def running_digests(sandbox, environment: str) -> dict[str, str]:
    from smartrelease.blocks import load_environment

    return {s: ref.split("@")[1] for s, ref in running_deployment(load_environment(environment)).images.items()}


def test_one_digest_from_the_dev_build_to_production(sandbox):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from tests.test_approval_e2e import Listener

    listener = Listener()  # the promotion is announced where the environment says
    CustomWebhookNotificationBlock(name="promotions", url=listener.url, json_data={
        "subject": "{{subject}}", "body": "{{body}}"}).save("smartrelease-e2e-promotions", overwrite=True)
    sandbox.set_env("RELEASE_NOTIFY_BLOCK", "custom-webhook/smartrelease-e2e-promotions")
    tag, digests = dev_build(sandbox, "1.0.0")
    assert tags(sandbox, tag) == digests  # hop 1: the dev tag in the registry

    state, dev = run_swept(release, environment=DEV, digests=digests)
    assert state.is_completed(), dev.text()
    assert running_digests(sandbox, DEV) == digests  # hop 2: what dev runs

    state, ticket = run_swept(promote, environment=PROD, from_tag=tag)
    assert state.is_completed(), ticket.text()
    assert tags(sandbox, "1.0.0") == digests  # hop 3: the SemVer names the same digests
    dev_run = read_history(DEV)[-1]
    assert dev_run["result"] == "released" and dev_run["flow_run_id"] in ticket.facts.promotion.evidence
    assert ticket.facts.promotion.forced_reason is None
    assert "| promoted at | 20" in ticket.markdown() and "| triggered by | direct run by " in ticket.markdown()
    row = read_history(PROD)[-1]
    assert row["result"] == "promoted" and row["version"] == "1.0.0"
    promoted = listener.wait_for("promoted")
    assert promoted["subject"] == f"[{PROD}] promoted: {tag} → 1.0.0"
    assert promoted["body"].splitlines()[1].startswith(f"{tag}'s digests from {DEV} tagged 1.0.0; vouched for by ")
    assert dev_run["flow_run_id"] in promoted["body"]
    sandbox.set_env("RELEASE_NOTIFY_BLOCK", None)
    listener.server.shutdown()
    assert {s: row[s].split("@")[1] for s in SERVICES} == digests
    assert "promotion-promo" in stored(state.state_details.flow_run_id)["artifact_keys"]

    state, prod = run_swept(release, environment=PROD)
    assert state.is_completed(), prod.text()
    steps = {r.name: r for r in prod.results}
    assert "deployed as pushed" in steps["build-pin"].detail and "built" not in steps["build-pin"].detail.replace("deployed as pushed", "")
    assert steps["verify"].status == Status.PASSED and "digests match for backend, frontend" in steps["verify"].detail
    assert running_digests(sandbox, PROD) == digests  # hop 4: production runs the bytes that passed in dev

    # The database outside Compose: the app reaches it as host.docker.internal, this
    # host at 127.0.0.1 (RELEASE_DATABASE_ADDRESS); as root, in a private checkout, the
    # cluster's files live where the `postgres` user can reach them.
    logs = stored(state.state_details.flow_run_id)["logs"]
    port = sandbox.settings.pg_port
    assert f"smartaccounting@host.docker.internal:{port}/smartaccounting (reached at 127.0.0.1:{port})" in logs
    assert sandbox.db_container() is None
    if os.geteuid() == 0:
        assert str(sandbox.settings.cluster().root).startswith(str(SHARED_STATE))


def test_a_digest_with_no_passing_dev_run_needs_force_and_a_reason(sandbox):
    tag, digests = dev_build(sandbox, "1.1.0")  # built, never released to dev
    state, refused = run_swept(promote, environment=PROD, from_tag=tag)
    assert state.is_failed() and [r.name for r in refused.failures()] == ["evidence"]
    assert "no Completed release of promo-dev ran these digests" in refused.failures()[0].detail
    assert tags(sandbox, "1.1.0") == {s: None for s in SERVICES}  # nothing tagged

    state, forced = run_swept(promote, environment=PROD, from_tag=tag, force_reason="hotfix approved in CHANGE-42")
    assert state.is_completed(), forced.text()
    assert {r.name: r.status for r in forced.results}["evidence"] == Status.WARNING
    assert forced.facts.promotion.forced_reason == "hotfix approved in CHANGE-42"
    assert "yes: hotfix approved in CHANGE-42" in forced.markdown()
    assert tags(sandbox, "1.1.0") == digests


def test_a_semver_tag_is_never_moved_to_another_digest(sandbox):
    before = tags(sandbox, "1.0.0")
    tag, digests = dev_build(sandbox, "1.2.0")
    assert digests != before
    state, refused = run_swept(promote, environment=PROD, from_tag=tag, version="1.0.0", force_reason="testing the refusal")
    assert state.is_failed() and [r.name for r in refused.failures()] == ["tag"]
    assert f"1.0.0 already points to {before['backend']}" in refused.failures()[0].detail
    assert tags(sandbox, "1.0.0") == before  # the registry is unchanged


def test_a_dev_tag_that_does_not_exist_is_named(sandbox):
    state, refused = run_swept(promote, environment=PROD, from_tag="dev-0000000")
    assert state.is_failed() and [r.name for r in refused.failures()] == ["resolve"]
    detail = refused.failures()[0].detail
    assert detail.startswith(f"{sandbox.env().target.backend_image}:dev-0000000 does not exist in 127.0.0.1:")
