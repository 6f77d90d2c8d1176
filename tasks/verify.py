"""Runbook, "Post-deploy verification": /api/system/version reports exactly the
released version, the git SHA and build time of the image actually running (its
OCI labels, read from Docker Engine) and the configured environment; and each
service runs the exact digest that was released."""

from blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from tasks.build_pin import LABEL_CREATED, LABEL_REVISION, LABEL_VERSION
from tasks.images import engine
from tasks.running import running_services
from tasks.runbook_task import runbook_task
from tasks.smoke import get_json

STEP = "verify"


def verify_release(env: Environment, version: str, images: dict[str, str] | None = None) -> Finding:
    """`images` maps a service to the `repository@digest` it must be running."""
    body = get_json(env, "/api/system/version", STEP)
    running = running_services(engine(timeout_s=30), env)
    if "backend" not in running:
        raise StepFailed(STEP, f"no backend container in compose project {env.target.compose_project}")
    labels = running["backend"].labels
    expected = {
        "version": (version, "the released version"),
        "gitSha": (labels.get(LABEL_REVISION), "the running backend image's revision label"),
        "buildTime": (labels.get(LABEL_CREATED), "the running backend image's created label"),
        "environment": (env.app.node_env, "NODE_ENV"),
    }
    problems = [
        f"{key} is {body.get(key)!r}, expected {want!r} ({source})"
        for key, (want, source) in expected.items()
        if body.get(key) != want
    ]
    if labels.get(LABEL_VERSION) != version:
        problems.append(f"the running backend image is labelled version {labels.get(LABEL_VERSION)!r}, not {version!r}")
    for service, ref in (images or {}).items():
        repository, digest = ref.split("@", 1)
        actual = running[service].digest_in(repository) if service in running else None
        if actual != digest:
            problems.append(f"{service} runs {actual or 'no registry image'}, not the released {digest}")
    if problems:
        raise StepFailed(STEP, "; ".join(problems))
    return Finding(detail=f"{version} ({body['gitSha'][:12]}, built {body['buildTime']}, {body['environment']})"
                          + (f"; digests match for {', '.join(images)}" if images else ""))


verify_task = runbook_task(STEP, timeout_s=60, retries=2, retry_delay_s=1)(verify_release)
