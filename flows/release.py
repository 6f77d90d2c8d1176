"""Runbook: "Deploy steps (compose up, migrate, smoke, verify)", "Post-deploy
verification" and "Rollback plan (code + DB)", as one release:

lock -> preflight -> build-pin -> migration-guard -> rollback-plan -> [approval] -> backup
-> launch -> wait-ready -> migrations -> smoke (four endpoints at once) -> metrics -> verify

Everything before launch leaves production untouched; the first failing step stops
the release. With RELEASE_APPROVAL=required a person approves the published plan
before the backup and launch (flows/approval.py). A failure from launch on rolls the
release back (flows/rollback.py):
its migrations undone (or the backup restored, per `db_strategy`), the previous
images relaunched by digest and verified. The report is returned, published as the
`release-<env>` markdown artifact, and appended to the `release-history-<env>` table.
"""

import time

import docker
from smartrelease.adapters.prefect_api import flow
from prefect.artifacts import create_markdown_artifact
from prefect.states import Cancelled, Completed, Failed
from prefect.task_runners import ThreadPoolTaskRunner

from smartrelease.blocks.envfile import Environment
from smartrelease.record.history import publish_run_report, read_history
from smartrelease.record.journal import gap_of
from smartrelease.flows import approval
from smartrelease.flows.approval import STEP as APPROVAL_STEP
from smartrelease.record.lock import LOCK_STEP
from smartrelease.flows.notify import notify_report
from smartrelease.flows.preflight import CHECKS, run_checks
from smartrelease.flows.rollback import roll_back, rollback_command
from smartrelease.flows.steps import StepRunner, Stopped, step_name
from smartrelease.flows.runbook import locked_environment, run_facts
from smartrelease.errors import ConfigError, StepFailed
from smartrelease.links import artifact_url
from smartrelease.report import (APPROVED, CANCELLED, REJECTED, TIMED_OUT, Report, RollbackFacts, Status,
                                 StepResult)
from smartrelease.refs import check_digest, check_version
from smartrelease.blocks.app_contract import ROLES, AppContract
from smartrelease.tasks.build_pin import build_pin_task
from smartrelease.tasks.environment import app_version
from smartrelease.adapters.images import engine, engine_answers_within
from smartrelease.adapters.postgres import database_answers_within
from smartrelease.tasks.cutover import launch_task
from smartrelease.tasks.metrics import metrics_task
from smartrelease.tasks.migrations import confirm_migrations_task, plan_migrations_task
from smartrelease.tasks.readiness import wait_ready_task
from smartrelease.tasks.backup.take import release_backup_task
from smartrelease.tasks.rollback_inputs import STRATEGIES, Strategy, after_failed_release_task
from smartrelease.tasks.rollback_plan import rollback_plan_task, running_version
from smartrelease.adapters.running import app_services, running_services
from smartrelease.tasks.smoke import smoke_task
from smartrelease.tasks.tls import tls_task
from smartrelease.tasks.verify import verify_task

PREFLIGHT_STEP = "preflight"  # preflight's checks, run in the release's own run (run_checks)


def smoke_steps(contract: AppContract) -> tuple[str, ...]:
    return tuple(f"smoke {path}" for path in contract.smoke_paths)


def release_steps(contract: AppContract, first_release: bool = False, approval: bool = False) -> tuple[str, ...]:
    """The release's steps, in order; with an approval gate, a person approves after
    the rollback plan; a first release checks TLS after wait-ready (preflight could not)."""
    return tuple(step_name(s) for s in (
        LOCK_STEP, PREFLIGHT_STEP, build_pin_task, plan_migrations_task, rollback_plan_task,
        *((APPROVAL_STEP,) if approval else ()), release_backup_task, launch_task, wait_ready_task,
        *((tls_task,) if first_release else ()), confirm_migrations_task, *smoke_steps(contract), metrics_task,
        verify_task))


STEPS = release_steps(AppContract())  # with the runbook's endpoints, no approval


ROLLBACK = "rollback: "
ENGINE_WAIT_S = 120  # how long an automatic rollback waits for Docker Engine to answer again (a restart)
DATABASE_WAIT_S = 60  # ... and for the database (a restart, a failover), which a rollback needs to decide


def release_inputs(env: Environment, version: str | None, digests: dict[str, str] | None,
                   db_strategy: Strategy = "undo") -> tuple[str, dict[str, str]]:
    """Validate the run's inputs before anything is touched (ConfigError names the problem)."""
    if db_strategy not in STRATEGIES:
        raise ConfigError(f"db strategy must be one of {', '.join(STRATEGIES)}, not {db_strategy!r}")
    try:
        version = app_version(env, version)
    except StepFailed as exc:
        raise ConfigError(exc.reason) from None
    check_version(version)
    digests = dict(digests or {})
    for service, digest in digests.items():
        if service not in ROLES:
            raise ConfigError(f"digests: unknown service {service!r} (known: {', '.join(ROLES)})")
        check_digest(digest, f"digests: {service} digest")
    return version, digests


def running_now(env: Environment) -> dict | None:
    """The project's services as they run now, read from Docker Engine (None when it
    cannot be read: preflight's `running` check then names why)."""
    try:
        return running_services(engine(timeout_s=30), env)
    except docker.errors.DockerException:
        return None


def preflight_result(env: Environment, version: str, first_release: bool, history: list[dict]) -> StepResult:
    """Preflight's checks, run in this flow run, as one step of the release."""
    started = time.monotonic()
    report = run_checks(env, version, first_release, history)
    ms = round((time.monotonic() - started) * 1000, 1)
    if report.ok:
        warnings = [r for r in report.results if r.status == Status.WARNING]
        detail = f"{len(report.results)} checks passed" + "".join(f"; {r.name}: {r.detail}" for r in warnings)
        return StepResult(name=PREFLIGHT_STEP, status=Status.WARNING if warnings else Status.PASSED, detail=detail, duration_ms=ms)
    detail = "; ".join(f"{r.name}: {r.detail}" for r in report.failures())
    return StepResult(name=PREFLIGHT_STEP, status=Status.FAILED, detail=detail, duration_ms=ms)


def automatic_rollback(env: Environment, plan, migrations, new_backend: str, db_strategy: str,
                       detected_at: float, stop_first: bool = False) -> tuple[list[StepResult], RollbackFacts]:
    """Decide (from the rollback plan and the database now), then roll back."""
    if plan.previous is None:
        return [], RollbackFacts(instructions=["First release of this environment: there is no previous version to "
                                               "go back to. Fix forward, or stop the Compose project."])
    # A release failed by Docker Engine going away (a restart) is rolled back once it is back.
    engine_away = engine_answers_within(ENGINE_WAIT_S)
    try:
        database_away = database_answers_within(env, ROLLBACK + after_failed_release_task.name, DATABASE_WAIT_S)
    except StepFailed:
        database_away = None  # still away, or refusing for another reason: rollback-target names it
    decide = StepRunner((after_failed_release_task,), prefix=ROLLBACK)
    try:
        inputs = decide.run(after_failed_release_task, env, plan, migrations.pending,
                            new_backend, db_strategy)
    except Stopped:
        return decide.results(), RollbackFacts(to_version=plan.previous.version, instructions=[
            f"The rollback could not be decided (see {ROLLBACK}rollback-target); nothing was rolled back. Run "
            f"{rollback_command(env, plan.previous.version)}."])
    done, facts = roll_back(env, inputs, prefix=ROLLBACK, detected_at=detected_at, stop_first=stop_first)
    if engine_away:
        facts.warnings.append(f"Docker Engine did not answer for {engine_away:.1f} s: the rollback waited for it")
    if database_away:
        facts.warnings.append(f"the database did not accept sessions for {database_away:.1f} s: the rollback waited for it")
    return decide.results() + done, facts


def publish_plan(plan) -> str | None:
    """Publish the plan; its link in the UI (None outside a flow run)."""
    artifact = create_markdown_artifact(key=f"rollback-plan-{plan.environment}", markdown=plan.markdown(),
                                        description=f"Rollback plan of the release of {plan.version} to "
                                                    f"{plan.environment}")
    return artifact_url(artifact) if artifact else None


# As many threads as preflight's checks, which run at once (the smoke steps: four).
@flow(name="release", flow_run_name="release-{environment}", task_runner=ThreadPoolTaskRunner(max_workers=len(CHECKS)))
def release(environment: str, version: str | None = None, digests: dict[str, str] | None = None,
            db_strategy: Strategy = "undo", wait: bool = True, stop_first: bool = False):
    """Release `version` (default: the app checkout's VERSION) to `environment`.
    `digests` pins services to registry digests, e.g. {"backend": "sha256:..."}.
    `db_strategy` is what a rollback does to the database: undo, restore or none.
    `wait`: when another run is changing the environment, wait for it (else fail at once).
    `stop_first`: stop the old containers before the new ones start (a release that
    cannot run beside the old version), at the cost of downtime; else a cutover."""
    with locked_environment(environment, "release", wait,
                            lambda env: release_inputs(env, version, digests, db_strategy)) as (env, inputs, lock_step):
        return release_locked(env, *inputs, db_strategy, lock_step, stop_first)


def release_locked(env: Environment, version: str, digests: dict[str, str], db_strategy: Strategy,
                   lock_step: StepResult, stop_first: bool = False):
    """The release, once it holds the environment's lock."""
    environment = env.name
    services, history = running_now(env), read_history(environment)
    running = app_services(env, services or {})
    # First: nothing of the app runs in the project. With a history, an environment
    # rebuilt from scratch: preflight's `running` check warns, naming its last release.
    first_release = services is not None and not running
    facts = run_facts(version=version, previous_version=running_version(env, services or {}, history))
    gate = env.target.approval_required
    steps = StepRunner(release_steps(env.target, first_release, gate))
    images: dict[str, str] = {}
    launched, detected_at = False, 0.0
    try:
        steps.add(lock_step)
        steps.add(preflight_result(env, version, first_release, history))
        pinned = steps.run(build_pin_task, env, version, digests)
        facts.digests, facts.git_sha = pinned.digests, pinned.git_sha
        images = {service: image.ref for service, image in pinned.images.items()}
        plan = steps.run(plan_migrations_task, env, images["backend"],
                         running["backend"].image_id if "backend" in running else None)
        rollback_plan = steps.run(rollback_plan_task, env, version, plan, first_release, history)
        plan_url = publish_plan(rollback_plan)
        if gate:  # the lock stays held: nothing else changes the environment under the plan
            answer = approval.ask(env, rollback_plan, images, pinned.git_sha, plan_url, facts.previous_version)
            facts.approval = answer.facts
            steps.add(answer.result)
        backup = steps.run(release_backup_task, env, version, plan.pending)
        facts.backup = backup.name if backup.taken_now else None
        facts.backup_sha256 = backup.sha256 if backup.taken_now else None
        if rollback_plan.backup_to_take:  # the plan now names the backup a rollback would restore
            rollback_plan = rollback_plan.model_copy(update={"backup": backup, "backup_to_take": False})
            publish_plan(rollback_plan)
        launched = True
        steps.run(launch_task, env, images, stop_first)
        steps.run(wait_ready_task, env)
        if first_release:  # preflight could not check it: nothing served the public URL yet
            steps.run(tls_task, env)
        steps.run(confirm_migrations_task, env, plan)
        facts.migrations_applied = plan.pending
        steps.run_together(lambda: {
            name: smoke_task.with_options(task_run_name=name).submit(env, path)
            for name, path in zip(smoke_steps(env.target), env.target.smoke_paths)
        })
        steps.run(metrics_task, env)
        steps.run(verify_task, env, version, images)
    except Stopped:
        detected_at = time.monotonic()
    results = steps.results()
    if launched and detected_at:
        done, facts.rollback = automatic_rollback(env, rollback_plan, plan, images["backend"], db_strategy,
                                                  detected_at, stop_first)
        results += done
    report = Report(flow="release", environment=environment, results=results, facts=facts)
    report = publish_run_report(report, f"Release report for {environment}", images)
    if report.ok:
        return Completed(message=f"released {version}{gap_of(report)}", data=report)
    return outcome(env, report)


def outcome(env: Environment, report: Report):
    """The run's final state for a release that did not pass, and who is told of it."""
    facts, version = report.facts, report.facts.version
    decided = facts.approval.decision if facts.approval else APPROVED
    if decided == REJECTED:  # a person said no: not a failure of the release
        notify_report(env, report, "release rejected")
        return Cancelled(message=f"release {version} rejected by {facts.approval.approver}: "
                                 f"{facts.approval.reason}; nothing was changed", data=report)
    if decided == CANCELLED:
        return Cancelled(message=f"release {version} cancelled while waiting for approval; nothing was changed",
                         data=report)
    if decided == TIMED_OUT:
        notify_report(env, report, "approval timed out")
        return Failed(message=f"release {version}: approval timed out; nothing was changed", data=report)
    message, event = f"release {version} failed: " + ", ".join(r.name for r in report.failures()), "release failed"
    if facts.rollback and facts.rollback.recovered:
        message += f"; rolled back to {facts.rollback.to_version} in {facts.rollback.time_to_recover_s} s"
        event = "release failed, rolled back"
    elif facts.rollback:
        message, event = message + "; rollback NOT recovered", "release failed, NOT recovered"
    notify_report(env, report, event)
    return Failed(message=message + gap_of(report), data=report)
