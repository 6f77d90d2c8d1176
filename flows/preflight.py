"""Runbook: "Preflight checklist (env, DB, TLS, backups)".

Seven independent checks run at once; every one always runs and every failure is
reported, never only the first. The seventh, `running`, is this tool's own: what runs
now is pinned where a rollback can find it (an environment released by hand is
adopted first). The report is returned, published as a markdown
artifact, and the flow ends Failed when any check failed.
"""

import time

from smartrelease.adapters.prefect_api import flow
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from smartrelease.blocks.envfile import Environment
from smartrelease.record.history import read_history
from smartrelease.flows.runbook import environment_of
from smartrelease.flows.steps import final_state, gather
from smartrelease.report import Report
from smartrelease.tasks.backup.dirs import backup_dirs_task
from smartrelease.tasks.backup.latest import backups_task
from smartrelease.tasks.database import database_task
from smartrelease.tasks.environment import environment_task
from smartrelease.tasks.takeover import running_task
from smartrelease.tasks.tls import tls_task
from smartrelease.tasks.wal_archive import wal_archive_task

CHECKS = ("environment", "database", "backup-dirs", "tls", "backups", "wal-archive", "running")


def run_checks(env: Environment, version: str | None, first_release: bool,
               history: list[dict] | None = None) -> Report:
    """Every check at once, as tasks of the current flow run, and the report published
    as `preflight-<env>`. A release runs them so, inside its own run (a subflow cost
    more than the checks). `history`: the release history when the caller has read
    it, else it is read here while the other checks run."""
    started = time.monotonic()
    futures = {
        "environment": environment_task.submit(env, version),
        "database": database_task.submit(env),
        "backup-dirs": backup_dirs_task.submit(env),
        "tls": tls_task.submit(env, first_release),
        "backups": backups_task.submit(env),
        "wal-archive": wal_archive_task.submit(env),
    }
    futures["running"] = running_task.submit(env, read_history(env.name) if history is None else history)
    report = Report(flow="preflight", environment=env.name, results=gather(futures, started, label="preflight"))
    create_markdown_artifact(
        key=f"preflight-{env.name}", markdown=report.markdown(), description=f"Preflight report for {env.name}"
    )
    return report


@flow(name="preflight", flow_run_name="preflight-{environment}", task_runner=ThreadPoolTaskRunner(max_workers=len(CHECKS)))
def preflight(environment: str, version: str | None = None, first_release: bool = False):
    """Check an environment is ready for a release. `environment` names its blocks.
    `first_release`: nothing of the app runs yet, so nothing may serve the public URL
    (tls then checks what it can and leaves the rest to after launch)."""
    report = run_checks(environment_of(environment), version, first_release)
    return final_state(report, "all checks passed", "failed")
