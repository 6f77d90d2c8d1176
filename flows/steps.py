"""Turning task runs into the report's step results: timed, typed, masked."""

import json
import re
import time
from collections.abc import Callable, Mapping
from uuid import UUID

from prefect import get_run_logger
from prefect.futures import PrefectFuture, as_completed
from prefect.states import Completed, Failed, State

from smartrelease.errors import ConfigError, StepFailed
from smartrelease.redact import mask
from smartrelease.record.journal import gap_of
from smartrelease.report import Finding, Report, Status, StepResult


# Who is told of each step as it finishes, (flow name, result): the CLI prints them,
# so `release`, `rollback` and `promote` show their progress whatever the log level.
observers: list[Callable[[str, StepResult], None]] = []


def finished(result: StepResult, label: str | None = None) -> None:
    """Tell the observers of a finished step; `label` names the part of the run it
    belongs to (`preflight` inside a release), else the flow's name."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    flow_name = label or (ctx.flow.name if ctx and ctx.flow else "")
    for observer in list(observers):
        observer(flow_name, result)
    # A deployment's run (on a worker, far away) publishes its progress; a CLI run has
    # its observers. Read from the run itself: prefect.runtime's deployment id asks
    # the server again on every call for a run that has none.
    if ctx and ctx.flow_run and ctx.flow_run.deployment_id:
        _publish_progress(str(ctx.flow_run.id), ctx.flow_run.name or "", flow_name, result)


PROGRESS_KEY = "steps-"  # + the flow run's name: `steps-release-prod`
_progress: dict[str, tuple[UUID, list[dict]]] = {}  # flow run id -> (its steps artifact, rows so far)


def _publish_progress(run_id: str, run_name: str, flow_name: str, result: StepResult) -> None:
    """Each finished step goes into one table artifact of the run, updated as the run
    goes, so a run far away (on a worker) shows its progress: in the UI, and in
    `trigger --wait`, which reads it. Written at once (an event would reach the
    server's database only at its next flush, seconds later). Masked like the
    report. A failure to write it never fails the run."""
    from prefect.artifacts import create_table_artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactUpdate

    row = {"flow": flow_name, "at": time.time(), **result.model_dump(mode="json")}
    try:
        if run_id not in _progress:
            key = PROGRESS_KEY + run_name if re.fullmatch(r"[a-z0-9-]+", run_name) else None
            _progress[run_id] = (create_table_artifact([row], key=key, description=f"The steps of {run_name}, "
                                                       "as they finish"), [row])
            return
        artifact_id, rows = _progress[run_id]
        rows.append(row)
        with get_client(sync_client=True) as client:
            client.update_artifact(artifact_id, ArtifactUpdate(data=json.dumps(rows)))
    except Exception as exc:  # progress is a convenience; the report is the record
        get_run_logger().warning("could not publish the progress of %s: %s", result.name, mask(str(exc)))


def failure_reason(exc: BaseException | None) -> str:
    if isinstance(exc, StepFailed):
        return exc.reason
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return mask(f"timed out: {exc}")
    return mask(f"unexpected error: {type(exc).__name__}: {exc}")


def gather(futures: Mapping[str, PrefectFuture], started: float, label: str | None = None) -> list[StepResult]:
    """Wait for every future (none is abandoned when another fails) and return one
    result per step, in the order given. `started` is when they were submitted;
    `label` as in finished()."""
    logger = get_run_logger()
    names = {f.task_run_id: name for name, f in futures.items()}
    done: dict[str, StepResult] = {}
    for future in as_completed(list(futures.values())):
        name = names[future.task_run_id]
        elapsed_ms = (time.monotonic() - started) * 1000
        outcome = future.result(raise_on_failure=False)
        if isinstance(outcome, Finding):
            status = Status.WARNING if outcome.warning else Status.PASSED
            detail = outcome.detail
        else:
            status = Status.FAILED
            detail = failure_reason(outcome)
        done[name] = StepResult(name=name, status=status, detail=mask(detail), duration_ms=round(elapsed_ms, 1))
        level = {Status.PASSED: logger.info, Status.WARNING: logger.warning, Status.FAILED: logger.error}[status]
        level("%s %s: %s", name, status.value, done[name].detail)
        finished(done[name], label)
    return [done[name] for name in futures]


class Stopped(Exception):
    """A step failed; the steps after it do not run."""


def step_name(step) -> str:
    """A step is named by its task (runbook_task gives each its runbook name), or by a
    string for what no task does (the lock, the approval, preflight within a release)."""
    return step if isinstance(step, str) else step.name


class StepRunner:
    """Runs a flow's steps one after another and records each result; the first
    failure raises Stopped. Steps never reached are reported as skipped. `steps`:
    what the run may do, in order, as tasks or names; `prefix` goes before every name
    (`rollback: ` for the rollback of a failed release)."""

    def __init__(self, steps, prefix: str = ""):
        self.prefix = prefix
        self.names = tuple(prefix + step_name(s) for s in steps)
        self.done: list[StepResult] = []

    def add(self, result: StepResult, *, stop: bool = True) -> None:
        """Record a result; a failure stops the flow unless `stop` is False (a step
        that failed by design, such as an undo refused for want of a down step)."""
        result = result.model_copy(update={"detail": mask(result.detail)})
        self.done.append(result)
        level = {Status.PASSED: "info", Status.WARNING: "warning", Status.FAILED: "error"}.get(result.status, "info")
        getattr(get_run_logger(), level)("%s %s: %s", result.name, result.status.value, result.detail)
        finished(result)
        if result.status == Status.FAILED and stop:
            raise Stopped(result.name)

    def run(self, task, *args, name: str | None = None, stop: bool = True):
        """Run one task to its end (retries included) and return what it found (None
        when it failed and `stop` is False). The step is named after the task, or
        `name` (the rollback's `relaunch` is the launch task)."""
        name = self.prefix + (name or task.name)
        started = time.monotonic()
        state = task.with_options(task_run_name=name)(*args, return_state=True)
        outcome = state.result(raise_on_failure=False)
        ms = round((time.monotonic() - started) * 1000, 1)
        if isinstance(outcome, Finding):
            self.add(StepResult(name=name, status=Status.WARNING if outcome.warning else Status.PASSED,
                                detail=outcome.detail, duration_ms=ms))
            return outcome
        self.add(StepResult(name=name, status=Status.FAILED, detail=failure_reason(outcome), duration_ms=ms), stop=stop)

    def run_together(self, submit: Callable[[], Mapping[str, PrefectFuture]]) -> None:
        """Submit tasks together and wait for all; record them, then stop if any failed."""
        started = time.monotonic()
        results = gather(submit(), started)
        self.done += results
        if any(r.status == Status.FAILED for r in results):
            raise Stopped(", ".join(r.name for r in results if r.status == Status.FAILED))

    def results(self) -> list[StepResult]:
        ran = {r.name for r in self.done}
        skipped = [StepResult(name=n, status=Status.SKIPPED, detail="not run: an earlier step failed", duration_ms=0)
                   for n in self.names if n not in ran]
        return self.done + skipped


def final_state(report: Report, done: str, failed: str) -> State:
    """A run's final state, its report as its data: Completed saying `done`, or Failed
    saying `failed` and the steps that failed; with what could not be published, if
    anything (record/journal.py)."""
    if report.ok:
        return Completed(message=f"{done}{gap_of(report)}", data=report)
    return Failed(message=f"{failed}: " + ", ".join(r.name for r in report.failures()) + gap_of(report), data=report)
