"""Runbook: "Post-deploy verification", on its own: what the schedule re-runs.

Read-only and cheap: health, ready, the version endpoint against the expected (or
last released) version and digests, auth health and metrics, all at once. It holds
the environment's lock while it checks, so a release cannot start half-way through;
each run adds a row (verified, failed, or skipped) to the environment's history.
"""

import time

from smartrelease.adapters.prefect_api import flow
from prefect.runtime import flow_run
from prefect.states import Completed
from prefect.task_runners import ThreadPoolTaskRunner

from smartrelease.blocks.envfile import Environment
from smartrelease.record.history import deployed, event_row, last_release, publish_report, read_history
from smartrelease.record.journal import gap_of
from smartrelease.record.lock import LOCK_STEP, Locked
from smartrelease.flows.steps import final_state, gather
from smartrelease.flows.runbook import locked_environment, notify_if_unwatched, run_facts
from smartrelease.errors import ConfigError
from smartrelease.report import ReleaseFacts, Report, Status, StepResult
from smartrelease.refs import check_version
from smartrelease.tasks.metrics import metrics_task
from smartrelease.tasks.rollback_plan import adopted_version
from smartrelease.blocks.app_contract import ROLES
from smartrelease.tasks.smoke import smoke_task
from smartrelease.tasks.verify import verify_task


@flow(name="verify", flow_run_name="verify-{environment}", task_runner=ThreadPoolTaskRunner(max_workers=6))
def verify(environment: str, expect_version: str | None = None, wait: bool = False):
    """Re-verify `environment`. Expects `expect_version`, else the last released one
    (whose digests are then checked too). While another run is changing the
    environment it records itself as skipped (never a failure), or with `wait`
    waits for that run and verifies what it left."""
    def expected(_env) -> None:
        if expect_version:
            check_version(expect_version, "expected version")

    facts = run_facts(version=expect_version)
    try:
        with locked_environment(environment, "verify", wait, expected) as (env, _, lock_step):
            # What to expect is read once the lock is held: a release waited for changed it.
            history = read_history(environment)
            stack = deployed(history)
            last = stack[-1] if stack else None
            version = expect_version or (last or {}).get("version")
            if not version:
                raise ConfigError(f"no expected version for {environment}: pass expect_version, or release first")
            facts.version = version
            report = verify_locked(env, version, last, lock_step, facts, history)
    except Locked as exc:
        facts.version = facts.version or (last_release(environment) or {}).get("version")
        skipped = StepResult(name=LOCK_STEP, status=Status.SKIPPED, detail=f"verify skipped: {exc}", duration_ms=0)
        report = Report(flow="verify", environment=environment, results=[skipped], facts=facts)
        report = publish_verify(report)
        return Completed(message=f"skipped: {exc}{gap_of(report)}", data=report)
    report = publish_verify(report)
    notify_if_unwatched(env, report, "verify failed")
    return final_state(report, f"{version} verified", "verification failed")


def verify_locked(env: Environment, version: str, last: dict | None, lock_step: StepResult,
                  facts: ReleaseFacts, history: list[dict] = ()) -> Report:
    images = {r: last[r] for r in ROLES if last and last.get("version") == version and last.get(r)}
    adopted = bool(images) and adopted_version(list(history), images) == version  # built by hand: no labels
    started = time.monotonic()
    futures = {f"smoke {path}": smoke_task.with_options(task_run_name=f"smoke {path}").submit(env, path)
               for path in env.target.smoke_paths}
    futures[metrics_task.name] = metrics_task.submit(env)
    futures[verify_task.name] = verify_task.submit(env, version, images, adopted)
    results = gather(futures, started)
    facts.digests = dict(ref.split("@", 1) for ref in images.values())
    facts.git_sha = (last or {}).get("git_sha") if images else None
    return Report(flow="verify", environment=env.name, results=[lock_step, *results], facts=facts)


VERIFIED, VERIFY_SKIPPED = "verified", "verify skipped"


def verify_result(report: Report) -> str:
    if report.ok:
        return VERIFIED
    if not report.failures():
        return VERIFY_SKIPPED
    return "verify failed at " + ", ".join(r.name for r in report.failures())


def publish_verify(report: Report) -> Report:
    """The report as `verify-<env>`, and a row in the history: when the environment
    was last proven healthy (or why it was not checked)."""
    return publish_report(report, f"verify-{report.environment}", f"Post-deploy verification of {report.environment}",
                          event_row(report.facts.version or "none", verify_result(report), flow_run.name or "",
                                    str(flow_run.id or ""), triggered_by=report.facts.triggered_by))
