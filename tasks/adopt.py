"""Taking over an environment released by hand (`smartrelease adopt`).

Teams come to this tool from the runbook: images built on the host with `docker
build`, started with `docker compose up -d`, never pushed, without the OCI labels. A
release cannot go back to such a version (its rollback relaunches images by registry
digest and verifies their version), so preflight refuses it until it is adopted:

- the running version is what the app's version endpoint answers;
- each app service's running image is pushed as it is (never rebuilt) to the
  environment's registry under a tag this tool owns, `adopted-<version>`, so a rollback
  finds it by digest on any host;
- the flow records it in the history as `adopted`.

Everything is checked before the first tag or push: both services running, the
version a SemVer, any version label agreeing with it, no `adopted-<version>` tag
already naming other content.
"""

import docker

from smartrelease.blocks.app_contract import ROLES, json_value, key_paths
from smartrelease.blocks.envfile import Environment
from smartrelease.errors import ConfigError, StepFailed
from smartrelease.refs import check_version
from smartrelease.report import Finding
from smartrelease.tasks.build_pin import LABEL_VERSION, login, push_immutable, registry_for, repository_path, tag_taken
from smartrelease.adapters.images import engine
from smartrelease.adapters.registry import RegistryError
from smartrelease.tasks.rollback_plan import running_deployment
from smartrelease.tasks.runbook_task import runbook_task
from smartrelease.adapters.running import app_services, running_services
from smartrelease.tasks.smoke import get_json

STEP = "adopt"


def adopted_tag(version: str) -> str:
    return f"adopted-{version}"


class Adoption(Finding):
    version: str
    images: dict[str, str]  # role -> registry/repository@digest
    pushed: list[str]  # the roles whose image this adoption pushed


def reported_version(env: Environment) -> str:
    """The version the running app reports at its version endpoint (RELEASE_VERSION_PATH)."""
    t = env.target
    body = get_json(env, t.version_path, STEP)
    version = json_value(body, t.version_key)
    if version is None:
        raise StepFailed(STEP, f"{t.version_path} answered no {t.version_key} (RELEASE_VERSION_KEY); the keys it has: "
                               f"{', '.join(key_paths(body)) or 'none'}. Nothing was changed.")
    try:
        return check_version(str(version), f"the version {t.version_path} reports")
    except ConfigError as exc:  # not a SemVer
        raise StepFailed(STEP, f"{exc}. Nothing was changed.") from None


def adopt_running(env: Environment, history: list[dict]) -> Adoption:
    """Pin what runs now (pushed as adopted-<version>), once everything is checked."""
    t = env.target
    if not t.compose_project:
        raise StepFailed(STEP, "RELEASE_COMPOSE_PROJECT is not set: there is no project to take over")
    client = engine()
    services = running_services(client, env)
    app = app_services(env, services)
    idle = [t.service(role) for role in ROLES if role not in app or app[role].status != "running"]
    if idle:
        raise StepFailed(STEP, f"{', '.join(idle)} not running in Compose project {t.compose_project}: nothing to take "
                               "over (where nothing runs, a release is a first release, with no adoption). Nothing "
                               "was changed.")
    current = running_deployment(env, services, history)
    if current is not None and current.version is not None:
        how = "adopted before" if current.adopted else "released by this tool"
        raise StepFailed(STEP, f"{current.version} runs by digest ({how}): nothing to take over. Nothing was changed.")
    version = reported_version(env)
    labelled = app["backend"].image_labels.get(LABEL_VERSION)
    if labelled and labelled != version:
        raise StepFailed(STEP, f"{t.backend_service}'s image is labelled version {labelled}, but the app reports "
                               f"{version} at {t.version_path}: which one runs? Nothing was changed.")
    tag = adopted_tag(version)
    images, to_push = {}, []
    try:
        with registry_for(env) as registry:
            for role in ROLES:
                path = repository_path(env, role)
                repository = f"{t.registry}/{path}"
                if digest := app[role].digest_in(repository):
                    images[role] = f"{repository}@{digest}"  # already there (an adoption cut short)
                    continue
                if taken := tag_taken(client, registry, repository, path, tag):
                    raise StepFailed(STEP, f"{taken}. Nothing was changed.")
                to_push.append((role, path, repository))
            if to_push:
                login(client, env)
            for role, path, repository in to_push:
                client.images.get(app[role].image_id).tag(repository, tag)
                images[role] = f"{repository}@{push_immutable(client, registry, repository, path, tag, step=STEP)}"
    except RegistryError as exc:
        raise StepFailed(STEP, f"{exc}; nothing was pushed", transient=True) from None
    except docker.errors.APIError as exc:
        raise StepFailed(STEP, f"Docker Engine: {exc.explanation or exc}") from None
    pushed = [role for role, _, _ in to_push]
    where = (f"pushed as {tag}: {', '.join(t.service(r) for r in pushed)}" if pushed
             else "already in the registry")
    return Adoption(detail=f"{version} (released by hand) taken over: {where}; "
                           + ", ".join(f"{t.service(r)} {images[r].split('@')[1][:19]}…" for r in ROLES),
                    version=version, images={r: images[r] for r in ROLES}, pushed=pushed)


adopt_task = runbook_task(STEP, timeout_s=1800)(adopt_running)
