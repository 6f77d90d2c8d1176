"""Notifications people see without watching the UI, through the Prefect
notification block the environment names (RELEASE_NOTIFY_BLOCK, `<type>/<name>`:
Slack, Microsoft Teams, email, a custom webhook, ...).

Sent by the flows themselves, at the moment they know the facts, rather than by a
Prefect automation: an automation sees a flow-run event (state and message), while
the message here needs the report (version from → to, the failed step's reason,
the time to recover), and a test can run the flow and read what arrived. Every
text is masked; a notification that cannot be delivered is logged, never fails
the run.
"""

from prefect import get_run_logger
from prefect.blocks.core import Block
from prefect.context import FlowRunContext
from pydantic import BaseModel

from smartrelease.blocks.envfile import Environment
from smartrelease.links import run_url
from smartrelease.redact import mask, remember
from smartrelease.report import Report

DETAIL_CHARS = 300


class Message(BaseModel):
    event: str  # "release failed", "approval waiting", "promoted", ...
    environment: str
    version: str | None = None
    previous_version: str | None = None
    what: str = ""  # what happened and why, one line
    recovery: str = ""  # rolled back to X in N s, or not recovered
    url: str = ""  # the run in the Prefect UI
    change: bool = True  # a change from previous_version to version (not a verify of one)

    def subject(self) -> str:
        change = (f"{self.previous_version or '—'} → {self.version}" if self.change else self.version) or ""
        return mask(f"[{self.environment}] {self.event}" + (f": {change}" if change else ""))

    def body(self) -> str:
        lines = [self.subject(), *(line for line in (self.what, self.recovery) if line)]
        if self.url:
            lines.append(f"Run: {self.url}")
        return mask("\n".join(lines))


def _one_line(text: str) -> str:
    """One line; a long one keeps its head and its tail, where a log's last line (the
    error) is."""
    line = " ".join(text.split())
    if len(line) <= DETAIL_CHARS:
        return line
    tail = DETAIL_CHARS // 3
    return f"{line[: DETAIL_CHARS - tail - 3]} … {line[-tail:]}"


def message_of(report: Report, event: str, url: str = "") -> Message:
    """The message for a finished run, from its report (not from its log)."""
    facts = report.facts
    failed = report.failures()
    what = "; ".join(f"{r.name}: {_one_line(r.detail)}" for r in failed[:2]) if failed else ""
    recovery = ""
    if facts and (rb := facts.rollback):
        if rb.recovered:
            recovery = f"Rolled back to {rb.to_version} and verified" + (
                f" in {rb.time_to_recover_s:.1f} s" if rb.time_to_recover_s is not None else "") + "."
        else:
            recovery = f"Rollback to {rb.to_version or '—'} NOT recovered: " + (
                _one_line(rb.instructions[0]).rstrip(".") if rb.instructions else "see the report") + "."
    if facts and facts.approval and not what:
        what = f"approval: {facts.approval.line()}"
    previous = facts.previous_version if facts else None
    if facts and (pr := facts.promotion):
        previous = pr.from_tag
        if not failed:
            what = (f"{pr.from_tag}'s digests from {pr.from_environment} tagged {facts.version}; vouched for by "
                    f"{pr.evidence or 'nothing'}" + (f"; FORCED: {pr.forced_reason}" if pr.forced_reason else ""))
    return Message(event=event, environment=report.environment, version=facts.version if facts else None,
                   previous_version=previous, what=what, recovery=recovery, url=url, change=report.flow != "verify")


def this_run_url() -> str:
    ctx = FlowRunContext.get()
    return run_url(ctx.flow_run.id) if ctx and ctx.flow_run else ""


def _remember_secrets(block: Block) -> None:
    """The block's own secrets (a Slack webhook's URL, a custom webhook's tokens) are
    masked too, should a delivery error quote them."""
    for field in type(block).model_fields:
        value = getattr(block, field, None)
        if hasattr(value, "get_secret_value"):
            secret = value.get_secret_value()
            values = secret.values() if isinstance(secret, dict) else [secret]
            remember(v for v in values if isinstance(v, str))


def notify(env: Environment, message: Message) -> bool:
    """Send `message` through the environment's notification block, if it names one.
    True when delivered; a failure is logged (masked) and returns False."""
    name = env.target.notify_block
    if not name:
        return False
    logger = get_run_logger()
    try:
        block = Block.load(name)
        _remember_secrets(block)
        if not callable(getattr(block, "notify", None)):
            raise TypeError(f"{name} is not a notification block")
        with block.raise_on_failure():
            block.notify(body=message.body(), subject=message.subject())
    except Exception as exc:  # a notification never fails the run
        logger.warning("notification %r through %s not delivered: %s", message.event, name,
                       mask(f"{type(exc).__name__}: {exc}"))
        return False
    logger.info("notified %s through %s", message.event, name)
    return True


def notify_report(env: Environment, report: Report, event: str) -> bool:
    return notify(env, message_of(report, event, this_run_url()))
