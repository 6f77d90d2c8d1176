"""Preflight `running`: what runs now is something a release can go back to.

A release's automatic rollback relaunches the running images by registry digest and
verifies them against their version. An environment released by hand (the runbook's
`docker build` and `docker compose up -d` on the host) runs images that no registry
knows and that carry no version label: `smartrelease adopt` takes it over first. This
check says so before anything is built or pushed (a refusal after the build cost a real
app 81 s of building and pushing).

Nothing of the app running is a first release; with a history, that is an environment
rebuilt from scratch (a new host, a disaster recovery), released as a first release
with a warning naming the last version it recorded.
"""

import docker

from smartrelease.blocks.app_contract import ROLES
from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.tasks.build_pin import LABEL_VERSION, repository_path
from smartrelease.adapters.images import engine
from smartrelease.record.history import deployed
from smartrelease.tasks.rollback_plan import running_deployment
from smartrelease.adapters.running import Container, app_services, running_services
from smartrelease.tasks.runbook_task import runbook_task

STEP = "running"


def adopt_command(env: Environment) -> str:
    return f"`smartrelease adopt --env-file {env.target.env_file or '<env file>'}`"


def unpinned(env: Environment, app: dict[str, Container]) -> list[str]:
    """Why each app service cannot be gone back to by digest ([] when all can)."""
    problems = []
    for role in ROLES:
        service, found = env.target.service(role), app.get(role)
        repository = f"{env.target.registry}/{repository_path(env, role)}"
        if found is None:
            problems.append(f"{service} has no container")
        elif found.digest_in(repository) is None:
            problems.append(f"{service} runs {found.reference or found.image_id[:19]} (image {found.image_id[7:19]}), "
                            f"which {repository} does not hold")
    return problems


def first_release_note(env: Environment, history: list[dict]) -> Finding:
    project = env.target.compose_project
    stack = deployed(history)
    if not stack:
        return Finding(detail=f"nothing of the app runs in Compose project {project}: a first release")
    last = stack[-1]
    return Finding(warning=True, detail=(
        f"nothing of the app runs in Compose project {project}, but the history's last release is "
        f"{last['version']} ({last.get('finished', 'time unknown')}): released as a first release (an environment "
        "rebuilt from scratch?), with nothing running to roll back to"))


def running_check(env: Environment, history: list[dict]) -> Finding:
    """What runs now can be gone back to (by registry digest, with a known version);
    or nothing runs (a first release). Refuses an environment released by hand."""
    if not env.target.compose_project:
        return Finding(detail="RELEASE_COMPOSE_PROJECT is not set: no running app to check (launch needs it, and "
                              "says so)")
    try:
        services = running_services(engine(timeout_s=30), env)
    except docker.errors.DockerException as exc:
        raise StepFailed(STEP, f"cannot read the running containers: {exc}") from None
    app = app_services(env, services)
    if not app:
        return first_release_note(env, history)
    try:
        problems = unpinned(env, app)
    except StepFailed as exc:  # no registry or repository set: nothing can be pinned
        raise StepFailed(STEP, exc.reason) from None
    if problems:
        raise StepFailed(STEP, f"{'; '.join(problems)}: nothing pinned for a rollback to go back to (released by "
                               f"hand?). Run {adopt_command(env)} to take it over, then release. Nothing was changed.")
    deployment = running_deployment(env, services, history)
    if deployment.version is None:
        raise StepFailed(STEP, f"{env.target.backend_service}'s image carries no {LABEL_VERSION} label and no adoption "
                               f"recorded its version (released by hand?). Run {adopt_command(env)} to take it over, "
                               "then release. Nothing was changed.")
    how = "adopted (released by hand)" if deployment.adopted else "released"
    return Finding(detail=f"{deployment.version} runs by digest ({how}): a rollback can go back to it")


running_task = runbook_task(STEP, timeout_s=60, retries=2, retry_delay_s=1)(running_check)
