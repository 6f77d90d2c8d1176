"""A restore drill: the newest backup restored into a scratch database and checked,
so a backup counts as proven only once it has been restored. Never touches the live
database; the weekly schedule runs it per environment (deployments/catalog.py).

backup -> wal-age -> scratch -> restore -> migrations -> tables -> drop-scratch

The report (`drill-<env>`) gives the RPO (the backup's age, and the newest archived
WAL segment's) and the RTO (the restore's time), the tables' row counts and the
schema's fingerprint; the history gets a row either way. The scratch database is
dropped whatever happened after it was created.
"""

from smartrelease.adapters.prefect_api import flow
from prefect.runtime import flow_run

from smartrelease.record.history import NO_VERSION, event_row, publish_report, read_history
from smartrelease.flows.steps import StepRunner, Stopped, final_state
from smartrelease.flows.runbook import environment_of, notify_if_unwatched, run_facts
from smartrelease.report import DrillFacts, Report
from smartrelease.tasks.drill import (check_migrations_task, check_tables_task, pick_backup_task, restore_backup_task,
                                      wal_age_task)
from smartrelease.tasks.scratch_database import create_scratch_task, drop_scratch_task

STEPS = (pick_backup_task, wal_age_task, create_scratch_task, restore_backup_task, check_migrations_task,
         check_tables_task, drop_scratch_task)
DRILL_PASSED = "drill passed"


@flow(name="drill", flow_run_name="drill-{environment}")
def drill(environment: str):
    """Restore the newest backup of `environment` into a scratch database, check it,
    report RPO and RTO, and drop the scratch database."""
    env = environment_of(environment)
    steps = StepRunner(STEPS)
    d = DrillFacts()
    facts = run_facts(drill=d)
    scratch = None
    try:
        backup = steps.run(pick_backup_task, env)
        d.backup, d.backup_format, d.backup_bytes, d.backup_age_s = backup.name, backup.format, backup.size, backup.age_s
        if wal := steps.run(wal_age_task, env, stop=False):
            d.wal_age_s = wal.age_s
        scratch = steps.run(create_scratch_task, env)
        restored = steps.run(restore_backup_task, env, backup, scratch.name)
        d.restore_s, d.backup_format = round(restored.seconds, 2), restored.format
        # Both checks always run, so a report names every problem of the backup at once.
        if found := steps.run(check_migrations_task, env, scratch.name, backup.taken_at,
                              read_history(environment), stop=False):
            d.migrations, d.released_version = found.applied, found.released_version
        if tables := steps.run(check_tables_task, env, scratch.name, stop=False):
            d.tables, d.schema_fingerprint = tables.rows, tables.schema_fingerprint
    except Stopped:
        pass
    finally:
        if scratch is not None:
            steps.run(drop_scratch_task, env, scratch.name, stop=False)
    facts.version = d.released_version
    report = Report(flow="drill", environment=environment, results=steps.results(), facts=facts)
    report = publish_drill(report)
    notify_if_unwatched(env, report, "restore drill failed")
    return final_state(report, f"{d.backup} restored in {d.restore_s:.1f} s and checked" if report.ok else "",
                       "drill failed")


def drill_result(report: Report) -> str:
    return DRILL_PASSED if report.ok else "drill failed at " + ", ".join(r.name for r in report.failures())


def publish_drill(report: Report) -> Report:
    d = report.facts.drill
    row = event_row(d.released_version or NO_VERSION, drill_result(report), flow_run.name or "", str(flow_run.id or ""),
                    triggered_by=report.facts.triggered_by, backup=d.backup or "",
                    rpo_s="" if d.backup_age_s is None else f"{d.backup_age_s:.0f}",
                    rto_s="" if d.restore_s is None else f"{d.restore_s:.1f}")
    return publish_report(report, f"drill-{report.environment}",
                          f"Restore drill of {report.environment}'s newest backup", row)
