"""Serve the flows as deployments. A deployment's only parameters are the
environment's name and plain options: secrets stay in blocks."""

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

import smartrelease
from flows.preflight import preflight


def all_deployments() -> list[RunnerDeployment]:
    return [
        preflight.to_deployment(
            name="preflight",
            description="Runbook: preflight checklist (env, DB, TLS, backups) for one environment.",
            tags=["smartrelease", "preflight"],
            version=smartrelease.__version__,
        ),
    ]


def main() -> None:
    serve(*all_deployments())


if __name__ == "__main__":
    main()
