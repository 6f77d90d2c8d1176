"""Promotion's evidence: a Completed release run of the dev environment that ran
exactly these digests. The dev history names candidate runs (rows keep the flow
run's id); each is read back from the Prefect API, whose state is the proof."""

from uuid import UUID

from prefect.client.orchestration import get_client

from smartrelease.errors import StepFailed
from smartrelease.report import Finding
from smartrelease.record.history import RELEASED
from smartrelease.tasks.runbook_task import runbook_task

STEP = "evidence"


def passing_run(rows: list[dict], images: dict[str, str]) -> str | None:
    """'<run name> (<id>), finished <time>' of the newest Completed release of `images`, or None."""
    candidates = [r for r in reversed(rows) if r.get("result") == RELEASED and r.get("flow_run_id")
                  and all(r.get(service) == ref for service, ref in images.items())]
    with get_client(sync_client=True) as client:
        for row in candidates:
            run = client.read_flow_run(UUID(row["flow_run_id"]))
            if run.state is not None and run.state.is_completed():
                return f"{run.name} ({run.id}), finished {row.get('finished')}"
    return None


class Evidence(Finding):
    run: str | None  # the passing run, or None when forced


def require_evidence(rows: list[dict], images: dict[str, str], from_environment: str, forced_reason: str | None) -> Evidence:
    found = passing_run(rows, images)
    if found:
        return Evidence(detail=f"passed in {from_environment}: {found}", run=found)
    if forced_reason:
        return Evidence(detail=f"no passing {from_environment} run with these digests; FORCED: {forced_reason}",
                        warning=True, run=None)
    raise StepFailed(STEP, f"no Completed release of {from_environment} ran these digests "
                           f"({', '.join(images.values())}): release them to {from_environment} first, or pass "
                           "--force --reason TEXT (recorded)")


evidence_task = runbook_task(STEP, timeout_s=60, retries=2)(require_evidence)
