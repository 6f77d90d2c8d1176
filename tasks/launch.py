"""Runbook, deploy step 2, "Launch compose": `docker compose -f docker-compose.prod.yml
up -d` with the images pinned by digest and ALLOW_PROD_MIGRATIONS passed through.

It does not wait: wait-ready watches the containers, so a backend that fails is
reported with its logs rather than as a stalled `compose up`.
"""

from blocks.envfile import Environment, app_keys
from smartrelease.errors import CommandFailed, StepFailed
from smartrelease.process import run
from smartrelease.report import Finding
from tasks.compose import ComposeProject
from tasks.runbook_task import runbook_task

STEP = "launch"


def compose_variables(env: Environment, images: dict[str, str]) -> dict[str, str]:
    """What the compose file is given: the app's variables (secrets included, in the
    command's environment) and the pinned image references."""
    values = {}
    for key in app_keys():
        value = getattr(env.app, key.lower())
        if value is not None:
            values[key] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    values["BACKEND_IMAGE"] = images["backend"]
    values["FRONTEND_IMAGE"] = images["frontend"]
    return values


def project_compose(env: Environment, images: dict[str, str]) -> ComposeProject:
    """The Compose project of `env` with `images` pinned: what every compose command
    of a release, a rollback or the sandbox runs against."""
    t = env.target
    if not (t.compose_file and t.compose_project):
        raise StepFailed(STEP, "RELEASE_COMPOSE_FILE and RELEASE_COMPOSE_PROJECT must be set")
    return ComposeProject(t.compose_file, t.compose_project, compose_variables(env, images), t.compose_env_file,
                          timeout_s=t.compose_timeout_s)


def compose_up(env: Environment, images: dict[str, str]) -> None:
    """The one `compose up` of this project (releases and the sandbox's first deploy)."""
    try:
        run(project_compose(env, images).up())
    except CommandFailed as exc:
        raise StepFailed(STEP, str(exc)) from None


def launch(env: Environment, images: dict[str, str]) -> Finding:
    compose_up(env, images)
    return Finding(detail="compose up: " + ", ".join(f"{s} {ref.rsplit('@', 1)[-1][:19]}…" for s, ref in images.items()))


launch_task = runbook_task(STEP, timeout_s=600)(launch)
