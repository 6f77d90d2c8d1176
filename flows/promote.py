"""Runbook, "Promotion strategy (dev -> prod)": production gets the same bytes that
passed in dev.

lock (the target environment's) -> resolve (the dev tag's digests) -> evidence (a passing dev release of them)
-> tag (the SemVer on the same digests, over the registry API, read back)

Nothing is built or pulled. The ticket (artifact `promotion-<env>`) and the history
record the digests, the dev run that vouched for them, who promoted and when; a
following `release` of that version deploys those digests.
"""

from datetime import datetime, timezone

from smartrelease.adapters.prefect_api import flow

from smartrelease.flows.notify import notify_report
from smartrelease.blocks.envfile import Environment
from smartrelease.record.history import publish_run_report, read_history
from smartrelease.record.lock import LOCK_STEP
from smartrelease.flows.release import release_inputs
from smartrelease.flows.steps import StepRunner, Stopped, final_state
from smartrelease.flows.runbook import locked_environment, run_facts
from smartrelease.refs import check_dev_tag
from smartrelease.report import PromotionFacts, Report, StepResult
from smartrelease.tasks.evidence import evidence_task
from smartrelease.tasks.promote_tag import resolve_task, tag_task

STEPS = (LOCK_STEP, resolve_task, evidence_task, tag_task)


@flow(name="promote", flow_run_name="promote-{environment}")
def promote(environment: str, from_tag: str, version: str | None = None, force_reason: str | None = None,
            wait: bool = True):
    """Give the digests of `from_tag` (e.g. dev-1a2b3c4) the SemVer `version` (default:
    the app checkout's VERSION) for `environment`. Without a passing release of those
    digests in the source environment it refuses, unless `force_reason` says why.
    `wait`: when another run is changing `environment`, wait for it (else fail at once)."""
    check_dev_tag(from_tag, "from_tag")
    with locked_environment(environment, "promote", wait,
                            lambda env: release_inputs(env, version, None)) as (env, (to_version, _), lock_step):
        return promote_locked(env, from_tag, to_version, force_reason, lock_step)


def promote_locked(env: Environment, from_tag: str, version: str, force_reason: str | None, lock_step: StepResult):
    environment = env.name
    source = env.target.promote_from
    steps = StepRunner(STEPS)
    steps.add(lock_step)
    promotion = PromotionFacts(from_tag=from_tag, from_environment=source, forced_reason=force_reason,
                               at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ"))
    facts = run_facts(version=version, promotion=promotion)
    images: dict[str, str] = {}
    try:
        images = steps.run(resolve_task, env, from_tag).images
        facts.digests = dict(ref.split("@") for ref in images.values())
        promotion.evidence = steps.run(evidence_task, read_history(source), images, source, force_reason).run
        steps.run(tag_task, env, images, version)
    except Stopped:
        pass
    report = Report(flow="promote", environment=environment, results=steps.results(), facts=facts)
    report = publish_run_report(report, f"Promotion ticket: {from_tag} as {version} for {environment}", images,
                                key=f"promotion-{environment}")
    notify_report(env, report, "promoted" if report.ok else "promotion failed")
    return final_state(report, f"{from_tag} promoted as {version}", "promotion failed")
