"""Runbook, deploy step 2, "Launch compose": `docker compose -f docker-compose.prod.yml
up -d` with the images pinned by digest and ALLOW_PROD_MIGRATIONS passed through:
the Compose project and its commands, which the launch step (tasks/cutover.py) and
the rollback run. `compose_up` is the runbook's own launch, stop-then-start.

It does not wait: wait-ready watches the containers, so a backend that fails is
reported with its logs rather than as a stalled `compose up`. A database that is a
service of the project (RELEASE_DATABASE_SERVICE) is started if it is not running
and never recreated: the app's services are brought up without their dependencies.
"""

import json
from pathlib import Path

from smartrelease.blocks.app_contract import ROLES
from smartrelease.blocks.envfile import Environment, app_keys
from smartrelease.errors import CommandFailed, StepFailed
from smartrelease.process import run
from smartrelease.adapters.compose import ComposeProject, pin_override
from smartrelease.adapters.images import engine
from smartrelease.adapters.postgres import parse_database_url
from smartrelease.adapters.running import Container, service_containers

STEP = "launch"
# For compose commands that start none of the app's images (stop, exec, down): the
# compose file still needs its image variables to be set.
UNUSED_IMAGE = "unused"


def compose_variables(env: Environment, images: dict[str, str]) -> dict[str, str]:
    """What the compose file is given: the app's variables (secrets included, in the
    command's environment), the pinned image references under the contract's variable
    names, and with a database service the postgres image's POSTGRES_USER,
    POSTGRES_PASSWORD and POSTGRES_DB, taken from DATABASE_URL (its first start
    creates the app's role and database with them)."""
    values = {}
    for key in app_keys():
        value = getattr(env.app, key.lower())
        if value is not None:
            values[key] = value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
    for role in ROLES:
        values[env.target.image_variable(role)] = images.get(role, UNUSED_IMAGE)
    if env.target.database_service and env.app.database_url:
        db = parse_database_url(env.app.database_url, STEP)
        values.update(POSTGRES_USER=db.user or "postgres", POSTGRES_DB=db.dbname,
                      POSTGRES_PASSWORD=db.password.get_secret_value() if db.password else "")
    return values


def project_compose(env: Environment, images: dict[str, str] | None = None) -> ComposeProject:
    """The Compose project of `env` with `images` pinned: what every compose command
    of a release, a rollback or the sandbox runs against."""
    t = env.target
    if not (t.compose_file and t.compose_project):
        raise StepFailed(STEP, "RELEASE_COMPOSE_FILE and RELEASE_COMPOSE_PROJECT must be set")
    return ComposeProject(t.compose_file, t.compose_project, compose_variables(env, images or {}), t.compose_env_file,
                          timeout_s=t.compose_timeout_s,
                          override=pin_override({t.service(role): t.image_variable(role) for role in ROLES}))


def team_config(env: Environment, variables: dict[str, str] | None = None) -> dict:
    """The team's compose file as Compose resolves it (`config --format json`), without
    this tool's override, `variables` set over the usual ones; {} when the environment
    names none that exists. Raises CommandFailed when Compose cannot read it."""
    t = env.target
    if not (t.compose_file and t.compose_project and Path(t.compose_file).is_file()):
        return {}
    return json.loads(run(project_compose(env).without_override().with_variables(variables or {}).config()).stdout)


def serving_already(found: list[Container]) -> bool:
    """Whether a service's containers (`found`) all run, healthy or without a health
    check: `compose up --wait` would change nothing and only say so."""
    return bool(found) and all(c.status == "running" and c.health in (None, "healthy") for c in found)


def start_database(env: Environment) -> None:
    """The database service, started if it is not running (and waited for until
    healthy), never recreated: its data outlives every release. Read from Docker
    first: Compose takes half a second to find it already serving."""
    if serving_already(service_containers(engine(timeout_s=30), env.target.compose_project,
                                          env.target.database_service)):
        return
    try:
        run(project_compose(env).up([env.target.database_service], no_recreate=True, wait=True))
    except CommandFailed as exc:
        raise StepFailed(STEP, f"{exc} (the database service {env.target.database_service})") from None


def compose_up(env: Environment, images: dict[str, str]) -> None:
    """The one `compose up` of this project (releases and the sandbox's first deploy).
    With a database service, it is started apart and the app's services are brought up
    without their dependencies, so no release ever recreates it."""
    project = project_compose(env, images)
    try:
        if db := env.target.database_service:
            start_database(env)
            others = [s for s in run(project.services()).stdout.split() if s != db]
            run(project.up(others, no_deps=True))
        else:
            run(project.up())
    except CommandFailed as exc:
        raise StepFailed(STEP, str(exc)) from None
