"""A run of an environment's deployment acts on that environment only.

Each deployment fixes its environment (`release/prod` has environment=prod) and runs
on that environment's worker, on the host of its Docker Engine. The UI's run form
still lets a person edit the parameter; a `release/sandbox` run told to act on prod
would then change prod from the sandbox's host. So a flow run started from a
deployment refuses an environment that is not its deployment's, before it loads any
block; a run started in process (the CLI, tests) has no deployment and is not
concerned.
"""

from prefect.client.orchestration import get_client
from prefect.runtime import deployment, flow_run

from smartrelease.errors import ConfigError


def check_placement(environment: str) -> None:
    deployment_id = deployment.id
    if not deployment_id:
        return
    with get_client(sync_client=True) as client:
        fixed_by = client.read_deployment(deployment_id)
    fixed = (fixed_by.parameters or {}).get("environment")
    if fixed is not None and fixed != environment:
        raise ConfigError(f"this run of deployment {flow_run.flow_name}/{fixed_by.name} acts on {fixed!r} "
                          f"only, not {environment!r}: trigger {environment}'s own deployment (it runs on "
                          f"{environment}'s worker)")
