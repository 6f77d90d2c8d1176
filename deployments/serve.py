"""Serve the flows as deployments, for the Prefect UI, schedules and CI (through
the Prefect API: `prefect deployment run release/release -p environment=prod`).

A deployment's only parameters are the environment's name and plain options:
secrets stay in blocks.

    python -m deployments.serve [--verify ENV ...] [--verify-every-minutes N]

`--verify ENV` adds a scheduled deployment `verify-ENV` that re-verifies ENV every
N minutes (default 15): the post-deploy re-verification.
"""

import argparse
from datetime import timedelta

from prefect import serve
from prefect.deployments.runner import RunnerDeployment

import smartrelease
from smartrelease.refs import check_environment
from flows.build import build
from flows.preflight import preflight
from flows.promote import promote
from flows.release import release
from flows.rollback import rollback
from flows.verify import verify

TAGS = ["smartrelease"]
DEFAULT_VERIFY_MINUTES = 15


def all_deployments(verify_environments: list[str] = (), verify_every_minutes: float = DEFAULT_VERIFY_MINUTES) -> list[RunnerDeployment]:
    common = {"version": smartrelease.__version__}
    deployments = [
        preflight.to_deployment(name="preflight", tags=[*TAGS, "preflight"], **common,
                                description="Runbook: preflight checklist (env, DB, TLS, backups) for one environment."),
        release.to_deployment(name="release", tags=[*TAGS, "release"], **common,
                              description="Runbook: deploy steps and post-deploy verification: preflight, build-pin, "
                                          "migration-guard, backup, rollback-plan, launch, wait-ready, smoke, metrics, "
                                          "verify; rolls itself back when a step from launch on fails."),
        rollback.to_deployment(name="rollback", tags=[*TAGS, "rollback"], **common,
                               description="Runbook: rollback plan (code + DB): the previous release back by digest, "
                                           "its database undone, restored or left, verified."),
        build.to_deployment(name="build", tags=[*TAGS, "build"], **common,
                            description="Runbook: promotion, dev half: build the app checkout as dev-<short git SHA> and push it."),
        promote.to_deployment(name="promote", tags=[*TAGS, "promote"], **common,
                              description="Runbook: promotion dev -> prod: the SemVer on the digests that passed in dev, "
                                          "without rebuilding."),
        verify.to_deployment(name="verify", tags=[*TAGS, "verify"], **common,
                             description="Runbook: post-deploy verification, read only."),
    ]
    for env in verify_environments:
        deployments.append(verify.to_deployment(
            name=f"verify-{check_environment(env)}", tags=[*TAGS, "verify", "scheduled"], **common,
            parameters={"environment": env}, interval=timedelta(minutes=verify_every_minutes),
            description=f"Re-verifies {env} every {verify_every_minutes:g} minutes against its last release.",
        ))
    return deployments


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m deployments.serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--verify", action="append", default=[], metavar="ENV", help="schedule re-verification of ENV")
    p.add_argument("--verify-every-minutes", type=float, default=DEFAULT_VERIFY_MINUTES)
    args = p.parse_args(argv)
    serve(*all_deployments(args.verify, args.verify_every_minutes))


if __name__ == "__main__":
    main()
