"""Runbook, "Promotion strategy (dev -> prod)": production gets the same bytes that
passed in dev.

lock (the target environment's) -> resolve (the dev tag's digests) -> evidence (a passing dev release of them)
-> tag (the SemVer on the same digests, over the registry API, read back)

Nothing is built or pulled. The ticket (artifact `promotion-<env>`) and the history
record the digests, the dev run that vouched for them, who promoted and when; a
following `release` of that version deploys those digests.
"""

from datetime import datetime, timezone

from prefect import flow

import smartrelease
from smartrelease.flows.notify import notify_report
from smartrelease.blocks import load_environment
from smartrelease.flows.placement import check_placement
from smartrelease.blocks.envfile import Environment
from smartrelease.record.history import publish_run_report, read_history
from smartrelease.record.lock import LOCK_STEP, flow_lock
from smartrelease.flows.release import release_inputs
from smartrelease.flows.steps import StepRunner, Stopped, final_state
from smartrelease.flows.requester import triggered_by
from smartrelease.refs import check_dev_tag
from smartrelease.report import PromotionFacts, ReleaseFacts, Report, StepResult
from smartrelease.tasks.evidence import STEP as EVIDENCE_STEP, evidence_task
from smartrelease.tasks.promote_tag import RESOLVE_STEP, TAG_STEP, resolve_task, tag_task

STEPS = (LOCK_STEP, RESOLVE_STEP, EVIDENCE_STEP, TAG_STEP)


@flow(name="promote", flow_run_name="promote-{environment}")
def promote(environment: str, from_tag: str, version: str | None = None, force_reason: str | None = None,
            wait: bool = True):
    """Give the digests of `from_tag` (e.g. dev-1a2b3c4) the SemVer `version` (default:
    the app checkout's VERSION) for `environment`. Without a passing release of those
    digests in the source environment it refuses, unless `force_reason` says why.
    `wait`: when another run is changing `environment`, wait for it (else fail at once)."""
    check_placement(environment)
    check_dev_tag(from_tag, "from_tag")
    release_inputs(load_environment(environment), version, None)  # bad input: refused before any wait
    with flow_lock(environment, "promote", wait) as lock_step:
        env = load_environment(environment)  # read again: what was saved while this run waited holds for it
        version, _ = release_inputs(env, version, None)
        return promote_locked(env, from_tag, version, force_reason, lock_step)


def promote_locked(env: Environment, from_tag: str, version: str, force_reason: str | None, lock_step: StepResult):
    environment = env.name
    source = env.target.promote_from
    steps = StepRunner(STEPS)
    steps.add(lock_step)
    promotion = PromotionFacts(from_tag=from_tag, from_environment=source, forced_reason=force_reason,
                               at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"))
    facts = ReleaseFacts(version=version, promotion=promotion, triggered_by=triggered_by(),
                         tool_version=smartrelease.__version__)
    images: dict[str, str] = {}
    try:
        images = steps.run(RESOLVE_STEP, resolve_task, env, from_tag).images
        facts.digests = dict(ref.split("@") for ref in images.values())
        promotion.evidence = steps.run(EVIDENCE_STEP, evidence_task, read_history(source), images, source,
                                       force_reason).run
        steps.run(TAG_STEP, tag_task, env, images, version)
    except Stopped:
        pass
    report = Report(flow="promote", environment=environment, results=steps.results(), facts=facts)
    report = publish_run_report(report, f"Promotion ticket: {from_tag} as {version} for {environment}", images,
                                key=f"promotion-{environment}")
    notify_report(env, report, "promoted" if report.ok else "promotion failed")
    return final_state(report, f"{from_tag} promoted as {version}", "promotion failed")
