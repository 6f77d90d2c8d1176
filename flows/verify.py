"""Runbook: "Post-deploy verification", on its own: what the schedule re-runs.

Read-only and cheap: health, ready, the version endpoint against the expected (or
last released) version and digests, auth health and metrics, all at once.
"""

import time

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

import smartrelease
from blocks import load_environment
from flows.history import last_release
from flows.steps import gather
from flows.trigger import triggered_by
from smartrelease.errors import ConfigError
from smartrelease.report import ReleaseFacts, Report
from smartrelease.refs import check_version
from tasks.metrics import metrics_task
from blocks.app_contract import ROLES
from tasks.smoke import smoke_task
from tasks.verify import verify_task


@flow(name="verify", flow_run_name="verify-{environment}", task_runner=ThreadPoolTaskRunner(max_workers=6))
def verify(environment: str, expect_version: str | None = None):
    """Re-verify `environment`. Expects `expect_version`, else the last released one
    (whose digests are then checked too)."""
    env = load_environment(environment)
    last = last_release(environment)
    version = expect_version or (last or {}).get("version")
    if not version:
        raise ConfigError(f"no expected version for {environment}: pass expect_version, or release first")
    check_version(version, "expected version")
    images = {r: last[r] for r in ROLES if last and last.get("version") == version and last.get(r)}

    started = time.monotonic()
    futures = {f"smoke {path}": smoke_task.with_options(task_run_name=f"smoke {path}").submit(env, path)
               for path in env.target.smoke_paths}
    futures["metrics"] = metrics_task.submit(env)
    futures["verify"] = verify_task.submit(env, version, images)
    results = gather(futures, started)

    facts = ReleaseFacts(version=version, digests=dict(ref.split("@", 1) for ref in images.values()),
                         git_sha=(last or {}).get("git_sha") if images else None,
                         triggered_by=triggered_by(), tool_version=smartrelease.__version__)
    report = Report(flow="verify", environment=environment, results=results, facts=facts)
    create_markdown_artifact(key=f"verify-{environment}", markdown=report.markdown(),
                             description=f"Post-deploy verification of {environment}")
    if report.ok:
        return Completed(message=f"{version} verified", data=report)
    return Failed(message="verification failed: " + ", ".join(r.name for r in report.failures()), data=report)
