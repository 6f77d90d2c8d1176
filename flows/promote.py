"""Runbook, "Promotion strategy (dev -> prod)": production gets the same bytes that
passed in dev.

resolve (the dev tag's digests) -> evidence (a passing dev release of them)
-> tag (the SemVer on the same digests, over the registry API, read back)

Nothing is built or pulled. The ticket (artifact `promotion-<env>`) and the history
record the digests, the dev run that vouched for them, who promoted and when; a
following `release` of that version deploys those digests.
"""

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

import smartrelease
from blocks import load_environment
from flows.history import append_history, read_history
from flows.release import release_inputs
from flows.steps import StepRunner, Stopped
from flows.trigger import triggered_by
from smartrelease.errors import StepFailed
from smartrelease.redact import Redactor
from smartrelease.report import Finding, PromotionFacts, ReleaseFacts, Report
from tasks.build_pin import SERVICES, registry_for, repository_path
from tasks.evidence import require_evidence
from tasks.promote_tag import RESOLVE_STEP, TAG_STEP, resolve_tag, tag_digest
from tasks.registry import RegistryError
from tasks.runbook_task import runbook_task

STEPS = (RESOLVE_STEP, "evidence", TAG_STEP)


class Resolved(Finding):
    images: dict[str, str]  # service -> registry/repository@digest


def resolve(env, from_tag: str) -> Resolved:
    try:
        with registry_for(env) as registry:
            images = {}
            for service in SERVICES:
                path = repository_path(env, service)
                images[service] = f"{env.target.registry}/{path}@{resolve_tag(registry, path, from_tag)}"
    except RegistryError as exc:
        raise StepFailed(RESOLVE_STEP, str(exc), transient=True) from None
    return Resolved(detail=f"{from_tag}: " + ", ".join(f"{s} {ref.split('@')[1][:19]}…" for s, ref in images.items()),
                    images=images)


def tag(env, images: dict[str, str], version: str) -> Finding:
    """Both tags checked before either is written: a refusal leaves the registry unchanged."""
    try:
        with registry_for(env) as registry:
            for service, ref in images.items():
                path, digest = repository_path(env, service), ref.split("@")[1]
                existing = registry.digest(path, version)
                if existing not in (None, digest):
                    raise StepFailed(TAG_STEP, f"{path}:{version} already points to {existing}, not to {digest}; tags "
                                               "are immutable, refusing (the registry is unchanged)")
            done = [tag_digest(registry, repository_path(env, s), ref.split("@")[1], version) for s, ref in images.items()]
    except RegistryError as exc:
        raise StepFailed(TAG_STEP, str(exc), transient=True) from None
    return Finding(detail="; ".join(done))


resolve_task = runbook_task(RESOLVE_STEP, timeout_s=60, retries=2)(resolve)
evidence_task = runbook_task("evidence", timeout_s=60, retries=2)(require_evidence)
tag_task = runbook_task(TAG_STEP, timeout_s=120, retries=1)(tag)


@flow(name="promote", flow_run_name="promote-{environment}")
def promote(environment: str, from_tag: str, version: str | None = None, force_reason: str | None = None):
    """Give the digests of `from_tag` (e.g. dev-1a2b3c4) the SemVer `version` (default:
    the app checkout's VERSION) for `environment`. Without a passing release of those
    digests in the source environment it refuses, unless `force_reason` says why."""
    env = load_environment(environment)
    version, _ = release_inputs(env, version, None)
    source = env.target.promote_from
    steps = StepRunner(STEPS, Redactor(env.secret_values()))
    promotion = PromotionFacts(from_tag=from_tag, from_environment=source, forced_reason=force_reason)
    facts = ReleaseFacts(version=version, promotion=promotion, triggered_by=triggered_by(),
                         tool_version=smartrelease.__version__)
    images: dict[str, str] = {}
    try:
        images = steps.run(RESOLVE_STEP, resolve_task, env, from_tag).images
        facts.digests = dict(ref.split("@") for ref in images.values())
        found = steps.run("evidence", evidence_task, read_history(source), images, source, force_reason)
        promotion.evidence = found.detail.split(": ", 1)[1] if not found.warning else None
        steps.run(TAG_STEP, tag_task, env, images, version)
    except Stopped:
        pass
    report = Report(flow="promote", environment=environment, results=steps.results(), facts=facts)
    create_markdown_artifact(key=f"promotion-{environment}", markdown=report.markdown(),
                             description=f"Promotion ticket: {from_tag} as {version} for {environment}")
    append_history(report, images, flow_run.name or "", flow_run.id or "")
    if report.ok:
        return Completed(message=f"{from_tag} promoted as {version}", data=report)
    return Failed(message="promotion failed: " + ", ".join(r.name for r in report.failures()), data=report)
