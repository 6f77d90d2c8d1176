"""The approval gate: a person approves a production change after seeing what it
will do, before the backup and launch.

The release pauses as `pause_flow_run(wait_for_input=ApprovalInput)` does, so the
Prefect UI shows the plan and a form on the run's page; `smartrelease approve`
answers through the same resume endpoint. The server checks an answer against the
form's schema (an invalid one is refused and the run stays paused). The lock is
held while waiting; after an approval the plan is checked again against what runs
now and the migrations table, and a release whose plan went stale stops.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.client.orchestration import get_client
from prefect.input import RunInput
from pydantic import Field

from smartrelease.blocks.envfile import Environment
from smartrelease.flows.notify import Message, notify
from smartrelease.flows.steps import finished
from smartrelease.flows.requester import REQUESTED_BY, requester, user
from smartrelease.errors import StepFailed
from smartrelease.links import run_url
from smartrelease.redact import mask
from smartrelease.report import APPROVED, CANCELLED, REJECTED, TIMED_OUT, ApprovalFacts, Status, StepResult
from smartrelease.adapters import prefect_api
from smartrelease.tasks.migrations import applied_migrations
from smartrelease.tasks.rollback_plan import DeployedVersion, RollbackPlan, running_deployment, tolerate

STEP = "approval"
POLL_S = 1  # how often the paused run asks the server whether it was answered
PAUSE_MARGIN_S = 600


class ApprovalInput(RunInput):
    """The form on the paused run's page (and what `smartrelease approve` sends)."""

    approve: bool = Field(description="On: go ahead with the backup and launch. Off: reject; nothing is changed.")
    reason: str = Field(min_length=1, max_length=500, description="Why: recorded in the report and the history.")
    approver: str = Field(min_length=1, max_length=100, description="Your name, as the record should show it.")


def utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def description(plan: RollbackPlan, images: dict[str, str], git_sha: str | None, plan_url: str | None,
                requested_by: str | None, until: float) -> str:
    """What the approver sees above the form: the change, and how it would be undone."""
    prev = plan.previous
    no_down = [m.name for m in plan.migrations if m.has_down is False]
    unknown = [m.name for m in plan.migrations if m.has_down is None]
    if plan.backup:
        backup = f"the newest, {plan.backup.age_s() / 60:.0f} min old: {plan.backup.name}"
    elif plan.backup_to_take:
        backup = "a new encrypted backup of the database, read back whole, before launch"
    else:
        backup = "none (first release)"
    lines = [f"## Approve the release of {plan.version} to {plan.environment}?", "",
             "Nothing has been changed yet. Approving runs the backup and the launch; rejecting ends the run "
             "with nothing changed.", "",
             "| the change | |", "|---|---|",
             f"| version | {prev.version if prev and prev.version else '— (first release)'} → {plan.version}"
             + (f" (git `{git_sha[:12]}`)" if git_sha else "") + " |"]
    for service, ref in images.items():
        now = prev.images.get(service) if prev else None
        lines.append(f"| {service} | `{now.rpartition('@')[2][:19] if now else '—'}` → `{ref.rpartition('@')[2][:19]}` |")
    lines += [f"| migrations to run | {', '.join(m.name for m in plan.migrations) or 'none'} |",
              *([f"| **no down step** | {', '.join(no_down)}: a rollback cannot undo them (restore instead) |"]
                if no_down else []),
              *([f"| down step unknown | {', '.join(unknown)} |"] if unknown else []),
              *([f"| must tolerate them | {tolerate(prev.version, [m.name for m in plan.migrations])} |"]
                if plan.migrations and prev else []),
              *([f"| **downtime** | {plan.stop_first_line()} |"] if plan.stop_first else []),
              *([f"| **errors possible** | {plan.pinned_frontend} |"] if plan.pinned_frontend else []),
              f"| backup | {backup} |",
              f"| rollback plan | {f'[rollback-plan-{plan.environment}]({plan_url})' if plan_url else f'rollback-plan-{plan.environment}'} |",
              f"| requested by | {requested_by or 'not known'} |",
              f"| answer by | {utc(until)}, else it ends as \"approval timed out\" |"]
    return "\n".join(lines) + "\n"


def differences(plan: RollbackPlan, running: DeployedVersion | None, applied: list[str]) -> list[str]:
    """How the environment now differs from what the plan (and the approver) saw."""
    said = []
    before = plan.previous
    if (before.images if before else None) != (running.images if running else None):
        for service in sorted(set(before.images if before else {}) | set(running.images if running else {})):
            was = before.images.get(service) if before else None
            now = running.images.get(service) if running else None
            if was != now:
                said.append(f"{service} runs {now or 'nothing known by digest'} (the plan saw {was or 'nothing'})")
    if applied != plan.applied_before:
        added = [m for m in applied if m not in plan.applied_before]
        gone = [m for m in plan.applied_before if m not in applied]
        said.append("the migrations table changed: " + ", ".join([f"+{m}" for m in added] + [f"-{m}" for m in gone]))
    return said


def _plan_now(env: Environment) -> tuple[DeployedVersion | None, list[str]]:
    return running_deployment(env), applied_migrations(env, STEP)


class Cancelled(Exception):
    """The run was cancelled (from the UI or the API) while it waited."""


def wait_for_answer(flow_run_id, form: type[ApprovalInput], key: str, timeout_s: float,
                    paused: Callable[[], None] | None = None) -> ApprovalInput | None:
    """Pause the run with `form`, call `paused` (if given) once the server holds it
    paused, and wait up to `timeout_s` for an answer (None: none came; Cancelled: the
    run was cancelled meanwhile). Prefect's `pause_flow_run`,
    with one change: the server's own pause deadline is later than ours
    (PAUSE_MARGIN_S), so the run ends in the state this flow chooses, with its
    report; at its deadline the server would fail the run itself, with a message of
    its own and no report."""
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        keyset = prefect_api.pause(client, flow_run_id, timeout_s + PAUSE_MARGIN_S, key)
        form.save(keyset)
        if paused:
            paused()
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state and run.state.is_running():
                return form.load(keyset)
            if run.state and (run.state.is_cancelling() or run.state.is_final()):
                raise Cancelled(run.state.name)
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


@dataclass
class Answer:
    facts: ApprovalFacts
    result: StepResult


def same_person(a: str, b: str | None) -> bool:
    return b is not None and a.strip().casefold() == b.strip().casefold()


def _record_requester(run, who: str) -> None:
    """A run started in a terminal has no requested-by tag: write it, so a CLI approver
    elsewhere (and the record) sees who asked."""
    if any(tag.startswith(REQUESTED_BY) for tag in run.tags or []):
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.id, tags=[*(run.tags or []), REQUESTED_BY + who])


def ask(env: Environment, plan: RollbackPlan, images: dict[str, str], git_sha: str | None,
        plan_url: str | None, previous_version: str | None) -> Answer:
    """Pause until someone answers (or the timeout), then check the plan still holds."""
    logger = get_run_logger()
    target = env.target
    run = FlowRunContext.get().flow_run
    asked, started = time.time(), time.monotonic()
    timeout_s = target.approval_timeout_min * 60
    who_asked = requester(run) or (user() if run.deployment_id is None else None)
    if who_asked and run.deployment_id is None:
        _record_requester(run, who_asked)
    form = ApprovalInput.with_initial_data(description=description(plan, images, git_sha, plan_url, who_asked,
                                                                    asked + timeout_s))
    url = run_url(run.id)
    waiting = StepResult(name=STEP, status=Status.WAITING, duration_ms=0,
                         detail=f"waiting for approval until {utc(asked + timeout_s)}: {url} or "
                                f"`smartrelease approve {run.id} --reason TEXT` (or --reject)")
    finished(waiting)
    logger.info("%s", waiting.detail)

    def announce() -> None:  # once paused: the link must open a page with its Resume button
        notify(env, Message(event="approval waiting", environment=env.name, version=plan.version,
                            previous_version=previous_version, what=f"release waits for approval until "
                            f"{utc(asked + timeout_s)}", url=url))
    facts = ApprovalFacts(decision=TIMED_OUT, asked_at=utc(asked))

    def result(status: Status, detail: str) -> Answer:
        return Answer(facts, StepResult(name=STEP, status=status, detail=mask(detail),
                                        duration_ms=round((time.monotonic() - started) * 1000, 1)))

    while True:
        remaining = timeout_s - (time.monotonic() - started)
        try:
            answer = wait_for_answer(run.id, form, f"{STEP}-{len(facts.refused)}", remaining,
                                     paused=None if facts.refused else announce)
        except Cancelled as exc:
            facts.decision = CANCELLED
            return result(Status.FAILED, f"cancelled while waiting for approval ({exc}); nothing was changed")
        if answer is None:
            return result(Status.FAILED, f"approval timed out: nobody answered within "
                                         f"{target.approval_timeout_min:g} min; nothing was changed")
        if target.approval_separate and same_person(answer.approver, who_asked):
            refusal = f"{answer.approver}: requested this release; RELEASE_APPROVAL_SEPARATE needs someone else"
            facts.refused.append(mask(refusal))
            logger.warning("self-approval refused: %s", mask(refusal))
            finished(waiting.model_copy(update={"detail": f"self-approval by {answer.approver} refused; "
                                                          + waiting.detail}))
            continue
        break
    facts.decision = APPROVED if answer.approve else REJECTED
    facts.approver, facts.reason, facts.answered_at = mask(answer.approver), mask(answer.reason), utc(time.time())
    said = f"{facts.decision} by {facts.approver}: {facts.reason}"
    if not answer.approve:
        return result(Status.FAILED, f"{said}; nothing was changed")
    try:
        changed = differences(plan, *_plan_now(env))
    except StepFailed as exc:
        return result(Status.FAILED, f"{said}, but the plan could not be checked again: {exc.reason}; "
                                     "nothing was changed")
    if changed:
        return result(Status.FAILED, f"{said}, but the environment changed while waiting: {'; '.join(changed)}. "
                                     "Nothing was changed: release again for a fresh plan")
    return result(Status.PASSED, f"{said}; plan unchanged")

