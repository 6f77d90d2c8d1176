"""Runbook, "Promotion strategy (dev -> prod)": a dev build, tagged `dev-<short git SHA>`
of the app checkout, with the same OCI labels as a release build (version from the
checkout's VERSION), pushed to the registry. Promotion later tags the same digest
with the SemVer; nothing is rebuilt on the way to production."""

from pathlib import Path

from smartrelease.blocks.envfile import Environment
from smartrelease.errors import StepFailed
from smartrelease.tasks.build_pin import STEP, Pinned, build_pin, checkout_revision
from smartrelease.tasks.runbook_task import runbook_task

SHORT_SHA = 7


def dev_tag(git_sha: str) -> str:
    return f"dev-{git_sha[:SHORT_SHA]}"


def dev_build(env: Environment) -> Pinned:
    app_dir = Path(env.target.app_dir or "")
    version_file = app_dir / "VERSION"
    if not version_file.is_file():
        raise StepFailed(STEP, f"{version_file} does not exist: set RELEASE_APP_DIR to the app checkout")
    version = version_file.read_text().strip()
    sha = checkout_revision(app_dir, version)  # a clean checkout: the tag must name what was built
    return build_pin(env, version, tag=dev_tag(sha))


dev_build_task = runbook_task(STEP, timeout_s=1800)(dev_build)
