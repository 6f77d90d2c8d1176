"""The deployments the Prefect UI shows, registered on a real Prefect server."""

import anyio
from prefect.client.orchestration import get_client

from deployments.serve import all_deployments


def test_preflight_deployment_asks_only_for_the_environment_name():
    async def registered():
        async with get_client() as client:
            return await client.read_deployment_by_name("preflight/preflight")

    for deployment in all_deployments():
        deployment.apply()
    stored = anyio.run(registered)
    schema = stored.parameter_openapi_schema
    assert set(schema["properties"]) == {"environment", "version"}
    assert schema["required"] == ["environment"]
    assert "smartrelease" in stored.tags
