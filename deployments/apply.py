"""Put the deployments on the Prefect server, and run an environment's worker.

`apply(environments)`: for each environment (its blocks must be saved already), its
lock, its work pool (process type) and its deployments, through Prefect's own
`prefect deploy --all` on the file `catalog.prefect_yaml` writes; the block types are
registered so the UI can show and edit them (secrets masked).

`worker_command(environment)`: `prefect worker start` on the environment's pool,
polling every `WORKER_POLL_S` seconds (Prefect's default, 10 s, leaves a triggered run
waiting about 11 s before it starts).
"""

import os
import sys
import tempfile
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectAlreadyExists

from smartrelease.deployments.catalog import HOME_VARIABLE, pool_name, prefect_yaml
from smartrelease.process import Command, run

PROJECT = Path(__file__).resolve().parent.parent
WORKER_POLL_S = 1
DEPLOY_TIMEOUT_S = 300


def deploy_command(prefect_file: Path, home: Path = PROJECT) -> Command:
    env = {**os.environ, HOME_VARIABLE: str(home), "PREFECT_CLI_PROMPT": "false"}
    return Command((sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
                    str(prefect_file)), timeout_s=DEPLOY_TIMEOUT_S, env=env, cwd=str(home), name="prefect deploy")


def worker_command(environment: str, home: Path = PROJECT) -> Command:
    env = {**os.environ, HOME_VARIABLE: str(home), "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_POLL_S),
           "PREFECT_WORKER_PREFETCH_SECONDS": "5"}
    return Command((sys.executable, "-m", "prefect", "worker", "start", "--pool", pool_name(environment),
                    "--type", "process", "--name", f"{pool_name(environment)}-{os.uname().nodename}"),
                   timeout_s=0, env=env, cwd=str(home), name="prefect worker")


# Job variables that change what a run executes: the program, its environment (PATH,
# PYTHONPATH, LD_PRELOAD, Prefect's own settings) and where it starts.
LOCKED_JOB_VARIABLES = ("command", "env", "working_dir")


def locked_job_template() -> dict:
    """Prefect's process job template without the variables in LOCKED_JOB_VARIABLES:
    the server refuses a run (or deployment) that sets one (422), and the worker has no
    place to put it either, so a run executes the deployment's flow and nothing else."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    for name in LOCKED_JOB_VARIABLES:
        template["variables"]["properties"].pop(name, None)
        template["job_configuration"].pop(name, None)
    template["variables"]["additionalProperties"] = False
    return template


def ensure_pool(environment: str) -> None:
    """The environment's pool, with the locked job template (put back on a pool made
    before, or changed since)."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool_name(environment), type="process",
                                                   base_job_template=locked_job_template(),
                                                   description=f"Runs {environment}'s flows on its Docker host"))
        except ObjectAlreadyExists:
            client.update_work_pool(pool_name(environment), WorkPoolUpdate(base_job_template=locked_job_template()))


def register_block_types() -> None:
    """`prefect block register` of the blocks an environment is saved as."""
    from smartrelease.blocks import AppEnvironment, ReleaseTarget
    from smartrelease.blocks.registry_credentials import RegistryCredentials

    for block in (AppEnvironment, ReleaseTarget, RegistryCredentials):
        block.register_type_and_schema()


def apply(environments: list[str], home: Path = PROJECT) -> str:
    """Make each environment's lock, pool and deployments; ConfigError (nothing
    applied) when one of them has no blocks."""
    from smartrelease.blocks import load_environment
    from smartrelease.record.lock import ensure_lock

    for environment in environments:
        load_environment(environment)  # its blocks, checked before anything is made
    for environment in environments:
        ensure_lock(environment)
        ensure_pool(environment)
    register_block_types()
    with tempfile.TemporaryDirectory(prefix="smartrelease-deploy-") as tmp:
        prefect_file = Path(tmp) / "prefect.yaml"
        prefect_file.write_text(prefect_yaml(environments))
        run(deploy_command(prefect_file, home))
    return (f"applied {len(environments) * 6} deployments for {', '.join(environments)} (pools "
            f"{', '.join(pool_name(e) for e in environments)})")


def worker_hint(environments: list[str]) -> str:
    """What to do next after `apply` on its own: nothing runs until a worker polls."""
    return "start each pool's worker on its host: " + "; ".join(f"smartrelease worker --env {e}" for e in environments)
