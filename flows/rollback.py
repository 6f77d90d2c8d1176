"""Runbook, "Rollback plan (code + DB)": put the previous version back.

rollback-target (decided before anything is touched), then for strategy `undo`,
the code first: under expand/contract the previous version runs on the newer schema,
so it is cut over while users are served, and the migrations are undone after:
-> relaunch (previous images, by digest) -> wait-ready
-> safety-backup -> undo-migrations -> schema -> verify
With `restore` (the database replaced whole) or `--stop-first` (a release that
cannot run beside the older schema), the database first, the backend stopped:
-> stop-backend -> safety-backup -> undo-migrations, or restore-database
-> schema (after a failed release: the schema must be as before it launched)
-> relaunch -> wait-ready -> verify

`roll_back` is the sequence after the decision; a failed release runs it with its
own decision (flows/release.py), the `rollback` flow with one from the history.
"""

import time
from datetime import datetime, timezone

from smartrelease.adapters.prefect_api import flow

from smartrelease.flows.notify import notify_report
from smartrelease.blocks.envfile import Environment
from smartrelease.record.history import publish_run_report, read_history
from smartrelease.record.lock import LOCK_STEP
from smartrelease.flows.steps import StepRunner, Stopped, final_state
from smartrelease.flows.runbook import locked_environment, run_facts
from smartrelease.errors import ConfigError, StepFailed
from smartrelease.report import Report, RollbackFacts, Status, StepResult
from smartrelease.tasks.cutover import launch_task
from smartrelease.tasks.readiness import wait_ready_task
from smartrelease.tasks.backup.take import safety_backup_task
from smartrelease.tasks.restore import restore_database_task
from smartrelease.tasks.schema import check_schema_task, describe, differences, schema_lines
from smartrelease.tasks.rollback_inputs import STRATEGIES, Strategy, RollbackInputs, for_rollback_flow_task
from smartrelease.tasks.undo import stop_backend_task, undo_migrations_task
from smartrelease.tasks.verify import verify_task

RELAUNCH = "relaunch"  # the launch task, with the previous version's images
CODE_STEPS = (RELAUNCH, wait_ready_task.name, verify_task.name)
STOP_BACKEND, SAFETY_BACKUP, UNDO = stop_backend_task.name, safety_backup_task.name, undo_migrations_task.name
RESTORE, SCHEMA = restore_database_task.name, check_schema_task.name


def blocked_undo(inputs: RollbackInputs) -> list[str]:
    """Migrations an undo would need and cannot do: the database is then left alone."""
    return [m for m in inputs.to_undo if m in inputs.without_down] if inputs.strategy == "undo" else []


def checks_schema(inputs: RollbackInputs) -> bool:
    """Whether the schema is compared with the one before the release: after a
    database step that should have given it back (a half-applied migration, which no
    undo removes, shows here), or when a migration failed with nothing to undo."""
    if inputs.schema_before is None or blocked_undo(inputs):
        return False
    return inputs.strategy in ("undo", "restore") and bool(inputs.to_undo or inputs.failed_migrations
                                                           or inputs.strategy == "restore" and inputs.backup)


def sequence(inputs: RollbackInputs, stop_first: bool = False) -> tuple[str, ...]:
    schema = (SCHEMA,) if checks_schema(inputs) else ()
    if inputs.strategy == "undo" and inputs.to_undo and not blocked_undo(inputs):
        if stop_first:
            return (STOP_BACKEND, SAFETY_BACKUP, UNDO) + schema + CODE_STEPS
        return CODE_STEPS[:2] + (SAFETY_BACKUP, UNDO) + schema + CODE_STEPS[2:]
    if inputs.strategy == "undo" and inputs.to_undo:
        database = (UNDO,)  # blocked: reported, the database not touched
    elif inputs.strategy == "restore" and inputs.backup is not None:
        database = (STOP_BACKEND, RESTORE)
    else:
        database = ()
    return database + schema + CODE_STEPS


def rollback_command(env: Environment, version: str | None, strategy: str | None = None) -> str:
    """The command line a human runs to finish (or retry) a rollback."""
    return (f"`smartrelease rollback --env-file {env.target.env_file or '<env file>'} --to {version}"
            + (f" --db-strategy {strategy}`" if strategy else "`"))


def failed_migration(inputs: RollbackInputs) -> str:
    """The migration that failed (Sequelize runs them in name order and stops at the
    first failure) and those that never ran after it."""
    first, *after = inputs.failed_migrations
    return first + (f"; {', '.join(after)} never ran" if after else "")


def advice(env: Environment, inputs: RollbackInputs, facts: RollbackFacts) -> None:
    """Warnings and a human's next steps, from what was decided and what happened."""
    if blocked := blocked_undo(inputs):
        runs = ("runs on it: wait-ready and verify passed, so the code stays rolled back" if facts.recovered
                else "did not pass wait-ready and verify on it")
        backup = inputs.backup.name if inputs.backup else "the newest backup in BACKUP_DIR"
        facts.instructions.append(
            f"{', '.join(blocked)} has no down step, so the database was not touched and keeps the schema of "
            f"{inputs.from_version}; {inputs.target.version} {runs}. To finish the rollback, either add a down step "
            f"to the migration, release it, then run {rollback_command(env, inputs.target.version, 'undo')}; or restore {backup}, losing "
            f"every write since it was taken: {rollback_command(env, inputs.target.version, 'restore')}.")
    if inputs.strategy == "restore" and inputs.backup is None:
        facts.warnings.append("database strategy restore, but this release took no backup (it had nothing to "
                              "migrate): the database was left as it is")
    if inputs.strategy == "none" and inputs.to_undo:
        facts.warnings.append(f"database strategy none: {', '.join(inputs.to_undo)} stay applied under {inputs.target.version}")
    if facts.schema_left:
        backup = inputs.backup.name if inputs.backup else "the backup taken before the release"
        half = (f" {failed_migration(inputs)} failed half-way: Sequelize runs a migration outside a "
                "transaction, so what it did before failing stays, unrecorded, and no undo removes it."
                if inputs.failed_migrations else "")
        facts.instructions.append(
            f"The database is not as it was before {inputs.from_version}: {describe(facts.schema_left)}.{half} "
            f"Remove those changes by hand, or restore {backup}, losing every write since it was taken: "
            f"{rollback_command(env, inputs.target.version, 'restore')}.")
    if inputs.failed_migrations:
        facts.instructions.append(
            f"A migration failed ({failed_migration(inputs)}): keep migrations off in production until it "
            f"is fixed: `smartrelease guard off --name {env.name}`.")


def schema_left(env: Environment, before: list[str]) -> list[str]:
    """How the schema differs from `before` now (the schema step has said that it does)."""
    try:
        return differences(before, schema_lines(env)) or ["(differed when checked)"]
    except StepFailed as exc:
        return [f"(the schema could not be read again: {exc.reason})"]


def relaunch(steps: StepRunner, env: Environment, images: dict[str, str], stop_first: bool) -> None:
    steps.run(launch_task, env, images, stop_first, name=RELAUNCH)
    steps.run(wait_ready_task, env)


def roll_back(env: Environment, inputs: RollbackInputs, *, prefix: str = "", detected_at: float | None = None,
              stop_first: bool = False) -> tuple[list[StepResult], RollbackFacts]:
    """Run the decided rollback (`sequence`); returns its step results and facts
    (never raises Stopped). The relaunch is a cutover (tasks/cutover.py) unless `stop_first`."""
    names = sequence(inputs, stop_first)
    steps = StepRunner(names, prefix=prefix)
    facts = RollbackFacts(to_version=inputs.target.version, images=inputs.target.images, db_strategy=inputs.strategy)
    images = inputs.target.images
    facts.migrations_left = list(inputs.to_undo)  # until the database step says otherwise
    code_first = names[0] == RELAUNCH
    try:
        if code_first:
            relaunch(steps, env, images, stop_first)
        if blocked := blocked_undo(inputs):
            steps.add(StepResult(name=prefix + UNDO, status=Status.FAILED, duration_ms=0,
                                 detail=f"not run: {', '.join(blocked)} has no down step; the database was not touched"),
                      stop=False)
        if STOP_BACKEND in names:
            steps.run(stop_backend_task, env, images, inputs.strategy == "undo")
        if SAFETY_BACKUP in names:
            facts.backup = steps.run(safety_backup_task, env, inputs.from_version or "unknown").name
        if UNDO in names and not blocked:
            steps.run(undo_migrations_task, env, inputs.undo_image, inputs.to_undo)
            facts.migrations_undone, facts.migrations_left = inputs.to_undo, []
        if RESTORE in names:
            steps.run(restore_database_task, env, inputs.backup.path, inputs.backup.sha256)
            facts.backup, facts.migrations_left = inputs.backup.name, []
            taken = datetime.fromtimestamp(inputs.backup.taken_at, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
            facts.warnings.append(f"the database was restored from {inputs.backup.name}, taken {taken}: "
                                  "every write since then is lost")
        if SCHEMA in names:
            # Not a reason to leave the backend stopped: the previous version is relaunched
            # either way, and whether it runs on this schema is decided by running it.
            if not steps.run(check_schema_task, env, inputs.schema_before, inputs.from_version, stop=False):
                facts.schema_left = schema_left(env, inputs.schema_before)
        if not code_first:
            relaunch(steps, env, images, stop_first)
        steps.run(verify_task, env, inputs.target.version, images, inputs.target.adopted)
        facts.recovered = True
        if detected_at is not None:
            facts.time_to_recover_s = round(time.monotonic() - detected_at, 2)
    except Stopped as stopped:
        serving = (f" {inputs.target.version} is serving (relaunch and wait-ready passed), on the database as "
                   f"{inputs.from_version} left it." if code_first and str(stopped) not in
                   tuple(prefix + n for n in CODE_STEPS[:2]) else "")
        facts.instructions.append(
            f"The rollback stopped at {stopped}: the environment is not verified.{serving} Fix the cause named in "
            f"that step, then run {rollback_command(env, inputs.target.version, inputs.strategy)}.")
    advice(env, inputs, facts)
    return steps.results(), facts


@flow(name="rollback", flow_run_name="rollback-{environment}")
def rollback(environment: str, to_version: str | None = None, db_strategy: Strategy = "undo", wait: bool = True,
             stop_first: bool = False):
    """Put `to_version` (default: the release before the running one) back on
    `environment`; `db_strategy` is undo, restore or none. `wait`: when another run
    is changing the environment, wait for it (else fail at once). `stop_first`: stop
    the running containers before the previous ones start (downtime); else a cutover."""
    if db_strategy not in STRATEGIES:
        raise ConfigError(f"db_strategy must be one of {', '.join(STRATEGIES)}, not {db_strategy!r}")
    with locked_environment(environment, "rollback", wait) as (env, _, lock_step):
        return rollback_locked(env, to_version, db_strategy, lock_step, stop_first)


def rollback_locked(env: Environment, to_version: str | None, db_strategy: Strategy, lock_step: StepResult,
                    stop_first: bool = False):
    environment = env.name
    started = time.monotonic()
    steps = StepRunner((LOCK_STEP, for_rollback_flow_task))
    steps.add(lock_step)
    inputs = None
    try:
        inputs = steps.run(for_rollback_flow_task, env, read_history(environment), to_version,
                           db_strategy)
    except Stopped:
        pass
    results, rb = steps.results(), None
    if inputs is not None:
        done, rb = roll_back(env, inputs, detected_at=started, stop_first=stop_first)
        results += done
    images = inputs.target.images if inputs else {}
    facts = run_facts(version=inputs.target.version if inputs else to_version,
                      previous_version=inputs.from_version if inputs else None,
                      digests={ref.split("@")[0]: ref.split("@")[1] for ref in images.values()}, rollback=rb)
    report = Report(flow="rollback", environment=environment, results=results, facts=facts)
    report = publish_run_report(report, f"Rollback report for {environment}", images)
    if not report.ok:
        notify_report(env, report, "rollback failed, NOT recovered" if rb else "rollback failed")
    return final_state(report, f"rolled back to {facts.version}", "rollback failed")
