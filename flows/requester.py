"""Who or what started the current flow run: in words for the report, and as the
account an approval policy compares with the approver."""

import getpass
import os
import socket

from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.runtime import deployment

# The requester travels with the run as a tag: an open-source Prefect server has no
# accounts (`created_by` stays empty), so `smartrelease trigger` and a run started in
# a terminal write who asked. Set SMARTRELEASE_USER in CI to the pipeline's user.
REQUESTED_BY = "requested-by:"


def user() -> str:
    """Who is at this terminal (or CI job)."""
    return os.environ.get("SMARTRELEASE_USER") or getpass.getuser()


def requested_by_tag() -> str:
    return REQUESTED_BY + user()


def requester(run: FlowRun) -> str | None:
    """The account that asked for `run`, when anything says: the server's record, else
    the run's requested-by tag; None when nobody said (a run made in the UI)."""
    if run.created_by and run.created_by.display_value:
        return run.created_by.display_value
    for tag in run.tags or []:
        if tag.startswith(REQUESTED_BY) and tag[len(REQUESTED_BY):]:
            return tag[len(REQUESTED_BY):]
    return None


def triggered_by() -> str:
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None:
        return "unknown"
    if run.deployment_id is None:
        return f"direct run by {getpass.getuser()}@{socket.gethostname()}"
    how = "schedule" if run.auto_scheduled else "deployment run"
    who = requester(run)
    return f"{how} of deployment {deployment.name or run.deployment_id}" + (f" by {who}" if who else "")
