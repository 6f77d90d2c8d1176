"""Runbook, "Post-deploy verification": /api/system/version reports exactly the
released version, the git SHA and build time of the image actually running (its
OCI labels, read from Docker Engine) and the configured environment; and each
service runs the exact digest that was released."""

from smartrelease.blocks.app_contract import has_key, json_value, key_paths
from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.tasks.build_pin import LABEL_CREATED, LABEL_REVISION, LABEL_VERSION
from smartrelease.adapters.images import engine
from smartrelease.adapters.running import app_services, running_services
from smartrelease.tasks.runbook_task import runbook_task
from smartrelease.tasks.smoke import get_json

STEP = "verify"


def verify_release(env: Environment, version: str, images: dict[str, str] | None = None,
                   adopted: bool = False) -> Finding:
    """`images` maps a role (backend, frontend) to the `repository@digest` it must be running.
    `adopted`: images built by hand without the OCI labels (`smartrelease adopt` recorded
    their version), so the app's answer is checked against the version and NODE_ENV only."""
    t = env.target
    body = get_json(env, t.version_path, STEP)
    running = app_services(env, running_services(engine(timeout_s=30), env))
    if "backend" not in running:
        raise StepFailed(STEP, f"no {t.backend_service} container in compose project {t.compose_project}")
    labels = running["backend"].image_labels
    expected = {t.version_key: (version, "the adopted version" if adopted else "the released version")}
    if not adopted:
        expected[t.git_sha_key] = (labels.get(LABEL_REVISION), "the running backend image's revision label")
        expected[t.build_time_key] = (labels.get(LABEL_CREATED), "the running backend image's created label")
    expected[t.environment_key] = (env.app.node_env, "NODE_ENV")
    found = {key: json_value(body, key) for key in (*expected, t.git_sha_key, t.build_time_key)}
    problems = version_problems(found, expected)
    if absent := [key for key in expected if not has_key(body, key)]:
        problems.append(f"{t.version_path} answered no {', '.join(absent)} (RELEASE_*_KEY settings); the keys it "
                        f"has: {', '.join(key_paths(body)) or 'none'}")
    if not adopted and labels.get(LABEL_VERSION) != version:
        problems.append(f"the running backend image is labelled version {labels.get(LABEL_VERSION)!r}, not {version!r}")
    for role, ref in (images or {}).items():
        repository, digest = ref.split("@", 1)
        actual = running[role].digest_in(repository) if role in running else None
        if actual != digest:
            problems.append(f"{t.service(role)} runs {actual or 'no registry image'}, not the released {digest}")
    if problems:
        raise StepFailed(STEP, "; ".join(problems))
    return Finding(detail=f"{version} ({str(found[t.git_sha_key])[:12]}, built {found[t.build_time_key]}, "
                          f"{found[t.environment_key]})" + (f"; digests match for {', '.join(images)}" if images else "")
                          + ("; adopted: built by hand without the OCI labels, so its git SHA and build time are "
                             "the app's word, not checked" if adopted else ""))


SHOWN_CHARS = 80  # of a value the endpoint answered: the app's words, not ours, and of any length


def version_problems(found: dict[str, object], expected: dict[str, tuple[object, str]]) -> list[str]:
    """One line per key whose answered value is not the expected one."""
    def shown(value: object) -> str:
        text = repr(value)
        return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"
    return [f"{key} is {shown(found.get(key))}, expected {want!r} ({source})"
            for key, (want, source) in expected.items() if found.get(key) != want]


verify_task = runbook_task(STEP, timeout_s=60, retries=2, retry_delay_s=1)(verify_release)
