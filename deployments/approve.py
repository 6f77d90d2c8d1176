"""Answering a release that waits for approval, over the Prefect API (what the UI's
form does): `POST /api/flow_runs/{id}/resume` with the answer as `run_input`.

    smartrelease approve 0b6e…  --reason "CAB-1234 approved"
    smartrelease approve 0b6e…  --reject --reason "not during month-end close"

The server checks the answer against the run's form and refuses an invalid one (the
run stays paused). With RELEASE_APPROVAL_SEPARATE=true, whoever requested the run
is refused here, before anything is sent (the flow refuses it too, for the UI).
"""

from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound

from smartrelease.flows.approval import same_person
from smartrelease.flows.requester import requester
from smartrelease.errors import ConfigError
from smartrelease.links import run_url


def parse_run_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise ConfigError(f"approve: {text!r} is not a flow run id (the UUID in the run's URL)") from None


def answer(flow_run_id: UUID, approve: bool, reason: str, approver: str) -> str:
    """Send the answer; what happened, in one line. ConfigError when it was not taken."""
    if not reason.strip():
        raise ConfigError("approve: --reason must say why; it is recorded in the report and the history")
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(flow_run_id)
        except ObjectNotFound:
            raise ConfigError(f"approve: no flow run {flow_run_id} on this Prefect server") from None
        if not run.state or not run.state.is_paused():
            raise ConfigError(f"approve: {run.name} is not waiting for an approval (it is "
                              f"{run.state.name if run.state else 'without a state'})")
        environment = (run.parameters or {}).get("environment")
        if approve and environment and _separate(environment) and same_person(approver, requester(run)):
            raise ConfigError(f"approve: {approver} requested {run.name}, and {environment} needs a separate "
                              "approver (RELEASE_APPROVAL_SEPARATE); the run still waits")
        response = client.resume_flow_run(flow_run_id, run_input={"approve": approve, "reason": reason,
                                                                 "approver": approver})
    if response.status != SetStateStatus.ACCEPT:
        why = getattr(response.details, "reason", None) or response.status.value
        raise ConfigError(f"approve: the server refused the answer ({' '.join(str(why).split())}); "
                          f"{run.name} still waits: {run_url(run.id)}")
    return f"{'approved' if approve else 'rejected'} {run.name} as {approver}: {run_url(run.id)}"


def _separate(environment: str) -> bool:
    from smartrelease.blocks import load_environment

    try:
        return load_environment(environment).target.approval_separate
    except ConfigError:
        return False  # not readable here: the flow itself still refuses a self-approval
