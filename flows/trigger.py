"""Who or what started the current flow run, in words for the report."""

import getpass
import socket

from prefect.context import FlowRunContext
from prefect.runtime import deployment


def triggered_by() -> str:
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is None:
        return "unknown"
    if run.deployment_id is None:
        return f"direct run by {getpass.getuser()}@{socket.gethostname()}"
    how = "schedule" if run.auto_scheduled else "deployment run"
    who = run.created_by.display_value if run.created_by else None
    return f"{how} of deployment {deployment.name or run.deployment_id}" + (f" by {who}" if who else "")
