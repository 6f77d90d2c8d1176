"""The deployments the Prefect UI shows, registered on a real Prefect server."""

import anyio
from prefect.client.orchestration import get_client

from deployments.serve import all_deployments


async def _registered(*names):
    async with get_client() as client:
        return [await client.read_deployment_by_name(n) for n in names]


def test_deployments_ask_only_for_the_environment_name_and_plain_options():
    for deployment in all_deployments():
        deployment.apply()
    preflight, release, verify, rollback, build, promote = anyio.run(
        _registered, "preflight/preflight", "release/release", "verify/verify", "rollback/rollback", "build/build",
        "promote/promote")
    for stored, expected in ((preflight, {"environment", "version", "first_release"}),
                             (release, {"environment", "version", "digests", "db_strategy", "wait"}),
                             (verify, {"environment", "expect_version", "wait"}),
                             (rollback, {"environment", "to_version", "db_strategy", "wait"}),
                             (build, {"environment"}),
                             (promote, {"environment", "from_tag", "version", "force_reason", "wait"})):
        schema = stored.parameter_openapi_schema
        assert set(schema["properties"]) == expected
        assert schema["required"] == (["environment", "from_tag"] if stored is promote else ["environment"])
        assert "smartrelease" in stored.tags
        assert not stored.schedules  # run on demand, from the UI or CI
    # The UI offers the database strategies as a choice, not free text.
    for stored in (release, rollback):
        assert stored.parameter_openapi_schema["properties"]["db_strategy"]["enum"] == ["undo", "restore", "none"]


def test_scheduled_re_verification_of_an_environment():
    for deployment in all_deployments(["prod"], verify_every_minutes=10):
        deployment.apply()
    (stored,) = anyio.run(_registered, "verify/verify-prod")
    assert stored.parameters == {"environment": "prod"}
    assert len(stored.schedules) == 1 and stored.schedules[0].active
    assert stored.schedules[0].schedule.interval.total_seconds() == 600
