"""Runbook, deploy step 2, "Launch compose": `docker compose -f docker-compose.prod.yml
up -d` with the images pinned by digest and ALLOW_PROD_MIGRATIONS passed through.

It does not wait: wait-ready watches the containers, so a backend that fails is
reported with its logs rather than as a stalled `compose up`.
"""

from python_on_whales.exceptions import DockerException

from blocks.envfile import Environment, app_keys
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from tasks.compose import compose
from tasks.runbook_task import runbook_task

STEP = "launch"


def compose_variables(env: Environment, images: dict[str, str]) -> dict[str, str]:
    """What the compose file is given: the app's variables (secrets included: Compose
    reads them from a 0600 file) and the pinned image references."""
    values = {}
    for key in app_keys():
        value = getattr(env.app, key.lower())
        if value is not None:
            values[key] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    values["BACKEND_IMAGE"] = images["backend"]
    values["FRONTEND_IMAGE"] = images["frontend"]
    return values


def project_compose(env: Environment, images: dict[str, str]):
    """The Compose project of `env` with `images` pinned: the context every compose
    command of a release, a rollback or the sandbox runs in."""
    t = env.target
    return compose(t.compose_file, t.compose_project, compose_variables(env, images), t.compose_env_file)


def compose_up(env: Environment, images: dict[str, str]) -> None:
    """The one `compose up` of this project (releases and the sandbox's first deploy)."""
    t = env.target
    if not (t.compose_file and t.compose_project):
        raise StepFailed(STEP, "RELEASE_COMPOSE_FILE and RELEASE_COMPOSE_PROJECT must be set")
    with project_compose(env, images) as dc:
        try:
            dc.compose.up(detach=True, quiet=True, remove_orphans=True)
        except DockerException as exc:
            # The command line names only files; the error text is Compose's own.
            tail = " / ".join((exc.stderr or "").strip().splitlines()[-3:])
            raise StepFailed(STEP, f"docker compose up failed (exit {exc.return_code}): {tail}") from None


def launch(env: Environment, images: dict[str, str]) -> Finding:
    compose_up(env, images)
    return Finding(detail="compose up: " + ", ".join(f"{s} {ref.rsplit('@', 1)[-1][:19]}…" for s, ref in images.items()))


launch_task = runbook_task(STEP, timeout_s=600)(launch)
